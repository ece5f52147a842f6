"""Failures in the simulator: devices that go down and come back, and what each way of recovering costs.

`simulate_failures` serves a plan while devices fail (`Outage`s, from a trace or drawn from each
device's mean times between failures and to repair, `outages_from_rates`) and recovers as the
runtime does (coinfer.runtime.recovery), so that re-planning, replicas and doing nothing can be
compared offline: availability, requests lost, latency, and the time from each failure to the
first answer served by the plan after it.

What is modelled:
- A device that is down computes nothing and its links carry nothing: a stage or hop on it that
  starts while it is down, or that is under way when it goes down, never finishes; the request
  waits, as a real one waits for a value that never comes.
- Detection: the runtime's watchdog declares a device down `down_after_s` after its last answer,
  and heartbeats go every `down_after_s / 5`, so a failure is noticed on average
  `DETECTION_FRACTION * down_after_s` after it happens (the last answer came half an interval before).
- Recovery (`Recovery`):
  - "replan": the plan is re-solved on the cluster less the devices down (coinfer.solve.fallback,
    the runtime's choice), and serves `redeploy_s` after detection, the time to deploy it (what
    `benchmarks/chaos.py` measures on real workers); every request in flight on a plan that used
    the lost device is replayed there from its start, and its latency counts from its first send;
  - "replicas": the plan's standbys take over at detection (`Plan.failover`, deployed beforehand,
    no redeploy); where a stage has no standby left, as "replan";
  - "none": nothing is done; a request waits `timeout_s` and is lost, and new ones keep coming.
- A device that comes back is re-admitted at its repair, and the run returns to its first plan
  `redeploy_s` later, when every device of that plan is up (requests in flight finish where they are).

Availability is the fraction of the run during which the plan new requests go to can serve them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import simpy

from coinfer.adapt.records import RequestRecord
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.sim.conditions import Conditions
from coinfer.sim.network import Process, SimCluster
from coinfer.sim.program import SimHop, SimStage
from coinfer.sim.serving import Server, _Trail
from coinfer.solve.fallback import replacement_plan

Recovery = Literal["replan", "replicas", "none"]
DETECTION_FRACTION = 0.9  # 1 - (1/5) / 2: the watchdog's bound less half a heartbeat interval


@dataclass(frozen=True)
class Outage:
    """`device` is down from `down_s` until `up_s` (simulated seconds; inf: it never comes back)."""

    device: str
    down_s: float
    up_s: float

    def __post_init__(self) -> None:
        if not 0 <= self.down_s < self.up_s:
            raise UserInputError(f"an outage of {self.device} must end after it starts: {self.down_s} .. {self.up_s}")


def outages_from_rates(problem: Problem, mtbf_s: dict[str, float], mttr_s: dict[str, float], until_s: float,
                       seed: int = 0) -> list[Outage]:
    """Exponential times between failures (mean `mtbf_s[device]`) and to repair (mean `mttr_s[device]`)
    for each device named, over [0, until_s); seeded, so two strategies can face the same failures."""
    rng = random.Random(seed)
    out = []
    for device, mtbf in sorted(mtbf_s.items()):
        problem.cluster.device(device)
        if device == problem.origin:
            raise UserInputError(f"the origin {device!r} cannot fail in the simulator: requests enter there")
        t = rng.expovariate(1.0 / mtbf)
        while t < until_s:
            repair = rng.expovariate(1.0 / mttr_s.get(device, mtbf / 10))
            out.append(Outage(device, t, t + repair))
            t += repair + rng.expovariate(1.0 / mtbf)
    return sorted(out, key=lambda o: o.down_s)


@dataclass
class FailureResult:
    """What a run under failures did."""

    records: list[RequestRecord]  # answered requests, latency from their first send
    lost: list[int]  # ids of requests given up on (recovery "none", or past the timeout)
    elapsed_s: float
    available_s: float  # time during which new requests went to a plan that could serve them
    recoveries: list[dict[str, float | str | None]] = field(default_factory=list)  # per outage
    replayed: int = 0
    plans: list[str] = field(default_factory=list)  # every plan served, in order

    @property
    def availability(self) -> float:
        return self.available_s / self.elapsed_s if self.elapsed_s > 0 else 1.0

    def latency_ms(self, q: float) -> float | None:
        values = [r.latency_s for r in self.records if r.latency_s is not None]
        return float(np.percentile(values, q) * 1e3) if values else None

    def summary(self) -> dict[str, object]:
        return {"requests": len(self.records) + len(self.lost), "answered": len(self.records), "lost": len(self.lost),
                "replayed": self.replayed, "availability": self.availability, "p50_ms": self.latency_ms(50),
                "p99_ms": self.latency_ms(99), "recoveries": self.recoveries, "plans": self.plans}


class _FailingServer(Server):
    """A Server whose stages and hops never finish on a device that is down during them."""

    def __init__(self, world: SimCluster, problem: Problem, outages: Sequence[Outage]) -> None:
        super().__init__(world, problem)
        self.outages = outages

    def down_during(self, devices: Sequence[str], start_s: float, end_s: float) -> bool:
        return any(o.device in devices and o.down_s <= end_s and start_s < o.up_s for o in self.outages)

    def _stage(self, stage: SimStage, trail: _Trail) -> Process:
        start = self.env.now
        yield from super()._stage(stage, trail)
        if self.down_during([stage.device], start, self.env.now):
            yield self.env.event()  # the device died under it: it never ends

    def _hop(self, hop: SimHop, trail: _Trail) -> Process:
        start = self.env.now
        yield from super()._hop(hop, trail)
        if self.down_during([hop.transfer.source, hop.transfer.target], start, self.env.now):
            yield self.env.event()


def simulate_failures(problem: Problem, plan: Plan, outages: Sequence[Outage], *, recovery: Recovery = "replan",
                      requests: int = 1000, in_flight: int = 1, down_after_s: float = 0.8, redeploy_s: float = 0.4,
                      timeout_s: float = 60.0) -> FailureResult:
    """Serve `requests` requests of `plan` while `outages` happen, recovering by `recovery` (module docstring)."""
    if recovery not in ("replan", "replicas", "none"):
        raise UserInputError(f"recovery must be replan, replicas or none, not {recovery!r}")
    if any(o.device == problem.origin for o in outages):
        raise UserInputError(f"the origin {problem.origin!r} cannot fail in the simulator: requests enter there")
    for o in outages:
        problem.cluster.device(o.device)
    env = simpy.Environment()
    server = _FailingServer(SimCluster(env, problem.cluster, Conditions()), problem, outages)
    return _Run(env, server, problem, plan, list(outages), recovery, down_after_s, redeploy_s,
                timeout_s).serve(requests, in_flight)


class _Run:
    def __init__(self, env: simpy.Environment, server: _FailingServer, problem: Problem, plan: Plan,
                 outages: list[Outage], recovery: Recovery, down_after_s: float, redeploy_s: float,
                 timeout_s: float) -> None:
        self.env, self.server, self.problem, self.base = env, server, problem, plan
        self.outages, self.recovery = outages, recovery
        self.down_after_s, self.redeploy_s, self.timeout_s = down_after_s, redeploy_s, timeout_s
        self.plans: dict[int, Plan] = {server.use(plan): plan}
        self.current = plan
        self.down: set[str] = set()
        self.ready = env.event().succeed()  # fires when the plan new requests go to can serve
        self.in_flight: dict[int, tuple[simpy.Process, int]] = {}  # request id -> its client, attempt's version
        self.records: list[RequestRecord] = []
        self.lost: list[int] = []
        self.replayed = 0
        self.recoveries: list[dict[str, float | str | None]] = []
        self.unavailable_since: float | None = None
        self.unavailable_s = 0.0

    def serve(self, requests: int, in_flight: int) -> FailureResult:
        env = self.env
        for outage in self.outages:
            env.process(self._outage(outage))
        next_id = [0]
        done = [0]
        finished = env.event()

        def client() -> Process:
            while next_id[0] < requests:
                rid = next_id[0]
                next_id[0] += 1
                yield from self._request(rid)
                done[0] += 1
                if done[0] == requests and not finished.triggered:
                    finished.succeed()

        for _ in range(min(in_flight, requests)):
            env.process(client())
        env.run(until=finished)
        self._available(env.now)
        for row in self.recoveries:
            row["to_next_answer_s"] = self._to_next_answer(row)
        return FailureResult(sorted(self.records, key=lambda r: r.request_id), sorted(self.lost), env.now,
                             env.now - self.unavailable_s, self.recoveries, self.replayed,
                             [str(p) for p in self.plans.values()])

    def _request(self, rid: int) -> Process:
        env = self.env
        sent_s = env.now
        while True:
            yield self.ready
            version = self.server.version
            attempt = env.process(self.server.request(rid))
            client = env.active_process
            assert client is not None
            self.in_flight[rid] = (client, version)  # the client process, which _recover interrupts
            left_s = self.timeout_s - (env.now - sent_s)
            try:
                outcome = yield attempt | env.timeout(max(0.0, left_s))
            except simpy.Interrupt:  # its plan lost a device: replay it on the next one
                self.replayed += 1
                continue
            finally:
                self.in_flight.pop(rid, None)
            if attempt in outcome:
                self.records.append(replace(outcome[attempt], sent_s=sent_s, latency_s=env.now - sent_s))
            else:
                self.lost.append(rid)
            return

    def _outage(self, outage: Outage) -> Process:
        env = self.env
        yield env.timeout(outage.down_s)
        self.down.add(outage.device)
        uses = outage.device in self.current.devices_used
        if uses:
            self._unavailable(env.now)
        row: dict[str, float | str | None] = {"device": outage.device, "down_s": outage.down_s,
                                              "to_next_answer_s": None, "action": "none" if uses else "unused",
                                              "version": None}
        self.recoveries.append(row)
        if uses and self.recovery != "none":
            yield env.timeout(DETECTION_FRACTION * self.down_after_s)
            row["action"] = yield from self._recover()
            row["version"] = self.server.version
        if outage.up_s != float("inf"):
            yield env.timeout(max(0.0, outage.up_s - env.now))
            self.down.discard(outage.device)
            if self.recovery == "none" and self.current.placement == self.base.placement:
                self._available(env.now)
            elif self.recovery != "none" and not set(self.base.devices_used) & self.down \
                    and self.current.placement != self.base.placement:
                yield env.timeout(self.redeploy_s)  # re-admission: the first plan, deployed again
                if not set(self.base.devices_used) & self.down:
                    self._switch(self.base)

    def _recover(self) -> Process:
        """Move to a plan without the devices down; replay what the lost versions held. Its action."""
        env = self.env
        self.ready = env.event()
        moved = self.current.failover(self.down) if self.recovery == "replicas" else None
        action = "failed over to standbys"
        if moved is None:
            action = "re-planned"
            moved = replacement_plan(self.current, self.problem.without(self.down))
            yield env.timeout(self.redeploy_s)
        lost_versions = {v for v, p in self.plans.items() if set(p.devices_used) & self.down}
        self._switch(moved)
        for client, version in list(self.in_flight.values()):
            if version in lost_versions and client.is_alive:
                client.interrupt("device lost")
        return action

    def _switch(self, plan: Plan) -> None:
        self.plans[self.server.use(plan)] = plan
        self.current = plan
        if not self.ready.triggered:
            self.ready.succeed()
        self._available(self.env.now)

    def _to_next_answer(self, row: dict[str, float | str | None]) -> float | None:
        """From the failure to the first answer served by the plan after it (without recovery: the
        first answer to a request sent after the failure)."""
        down_s = float(row["down_s"] or 0.0)
        version = row["version"]
        answered = [r.sent_s + (r.latency_s or 0.0) for r in self.records
                    if (r.plan_version >= int(version) if version is not None else r.sent_s >= down_s)]
        later = [t for t in answered if t > down_s]
        return min(later) - down_s if later else None

    def _unavailable(self, now: float) -> None:
        if self.unavailable_since is None:
            self.unavailable_since = now

    def _available(self, now: float) -> None:
        if self.unavailable_since is not None:
            self.unavailable_s += now - self.unavailable_since
            self.unavailable_since = None
