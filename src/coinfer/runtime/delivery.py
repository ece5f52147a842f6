"""Serving a run of requests so that each is answered exactly once, even when devices are lost.

`run_requests` keeps at most `in_flight` requests outstanding and keeps every request's inputs
until its answer arrives. With a `Rerouter` (coinfer.runtime.recovery) it asks, between
messages, whether the plan changed: when a device was lost the rerouter has already deployed a
plan without it as a new version, and every request in flight on a version that used the lost
device is sent again, from its inputs, on the new version. A request's attempt is the plan
version it was last sent on; the client drops any output or error of an earlier attempt
(`Client.stale_messages`) and takes a request out of the pending set when it completes, so a
late answer from a device presumed dead, or a second copy, never reaches the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from coinfer.runtime.client import Client, Outcome


@dataclass(frozen=True)
class Reroute:
    """A new plan version is live: new requests go there, and so do the replays of `replay`'s."""

    version: int
    replay: frozenset[int]  # plan versions whose requests in flight must be sent again


class Rerouter(Protocol):
    def reroute(self) -> Reroute | None: ...  # called often; deploys and returns a change when one is due

    def retire(self, busy_versions: set[int]) -> None: ...  # undeploy old versions no request still uses

    def lacks_version(self, errors: list[dict[str, Any]]) -> bool: ...  # see `run_requests`



def run_requests(client: Client, origin: str, plan_version: int, output_names: tuple[str, ...],
                 inputs_for: Callable[[int], Mapping[str, np.ndarray]], requests: int, in_flight: int = 1,
                 timeout_s: float = 60.0, first_id: int = 1, on_done: Callable[[Outcome], None] | None = None,
                 rerouter: Rerouter | None = None) -> list[Outcome]:
    """Send `requests` requests with at most `in_flight` outstanding; every outcome, in id order.

    Without a rerouter a request whose device is lost fails after `timeout_s`; with one it is
    replayed on the plan the rerouter moved to (see the module docstring)."""
    pending: dict[int, Outcome] = {}
    kept: dict[int, Mapping[str, np.ndarray]] = {}  # the inputs of each request in flight, for a replay
    finished: list[Outcome] = []
    next_id, last_id = first_id, first_id + requests

    def finish(outcome: Outcome) -> None:
        kept.pop(outcome.request_id, None)
        finished.append(outcome)
        if on_done is not None:
            on_done(outcome)

    while next_id < last_id or pending:
        if rerouter is not None:
            change = rerouter.reroute()
            if change is not None:
                plan_version = change.version
                replay(client, origin, pending, kept, change)
        while next_id < last_id and len(pending) < in_flight:
            kept[next_id] = inputs_for(next_id)
            pending[next_id] = Outcome(next_id, time.perf_counter(), plan_version=plan_version)
            client.submit(origin, plan_version, next_id, kept[next_id])
            next_id += 1
        for outcome in client.collect(pending, output_names, 0.05 if rerouter is not None else 0.2):
            if outcome.errors and rerouter is not None and rerouter.lacks_version(outcome.errors):
                # a worker on its path restarted and lost the version: the rerouter routes around it,
                # and the request waits, in flight, for the replay
                outcome.errors.clear()
                outcome.outputs.clear()
                pending[outcome.request_id] = outcome
                continue
            if outcome.errors:
                client.cancel(outcome.plan_version or plan_version, outcome.request_id)
            finish(outcome)
        now = time.perf_counter()
        for rid in [r for r, o in pending.items() if now - o.sent_s > timeout_s]:
            outcome = pending.pop(rid)
            outcome.errors.append({"error": f"no result within {timeout_s:g} s"})
            client.cancel(outcome.plan_version or plan_version, rid)
            finish(outcome)
        if rerouter is not None:
            rerouter.retire({o.plan_version for o in pending.values() if o.plan_version is not None})
    return sorted(finished, key=lambda o: o.request_id)


def replay(client: Client, origin: str, pending: Mapping[int, Outcome], kept: Mapping[int, Mapping[str, np.ndarray]],
           change: Reroute) -> int:
    """Send again, on `change.version`, every pending request whose attempt is on a replayed version;
    how many were sent. Each keeps its id and its first send time."""
    sent = 0
    for rid, outcome in sorted(pending.items()):
        if outcome.plan_version in change.replay:
            outcome.plan_version = change.version
            outcome.attempts += 1
            outcome.outputs.clear()
            client.submit(origin, change.version, rid, kept[rid])
            sent += 1
    return sent
