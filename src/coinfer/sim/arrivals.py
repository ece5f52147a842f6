"""How requests arrive: a closed loop (a fixed number outstanding) or an open loop (a fixed rate).

Closed loop (`rate_per_s` None): `in_flight` clients each send a request, wait for its result and
send the next at once, as a camera feeding frames as fast as they are served; with one client
every request sees an idle system. Open loop: one request every 1 / `rate_per_s` seconds from
time 0, whatever the system's state, as independent users would. Request ids count 0, 1, ... in
the order requests are sent. A run sends `requests` requests, or fewer when `until_s` comes first:
then it ends when those sent have completed (a run bounded in simulated time).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import simpy

from coinfer.adapt.records import RequestRecord
from coinfer.errors import UserInputError
from coinfer.sim.network import Process

RequestProcess = Callable[[int], Process]  # request id -> the process serving it, returning its record
OnDone = Callable[[RequestRecord], None]


def drive(env: simpy.Environment, serve: RequestProcess, on_done: OnDone, *, requests: int, in_flight: int = 1,
          rate_per_s: float | None = None, until_s: float | None = None) -> tuple[simpy.Event, list[int]]:
    """Start sending up to `requests` requests, none at or after `until_s` (simulated seconds).

    Returns an event that fires when every request sent has completed, and a one-element list
    holding how many were sent so far. `on_done` sees every record the moment its request
    completes, before a closed loop sends the next request, so a decision taken there applies to
    that next request.
    """
    if requests < 1:
        raise UserInputError(f"simulate at least one request, not {requests}")
    if rate_per_s is None and in_flight < 1:
        raise UserInputError(f"a closed loop needs at least one request in flight, not {in_flight}")
    if rate_per_s is not None and not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise UserInputError(f"an open loop needs a finite positive request rate, not {rate_per_s}")
    finished = env.event()
    sent = [0]
    completed = [0]
    senders = [0]  # clients (closed loop) or the source (open loop) still sending

    def may_send() -> bool:
        return sent[0] < requests and (until_s is None or env.now < until_s)

    def check_finished() -> None:
        if senders[0] == 0 and completed[0] == sent[0] and not finished.triggered:
            finished.succeed()

    def serve_one(request_id: int) -> Process:
        record = yield env.process(serve(request_id))
        on_done(record)
        completed[0] += 1
        check_finished()

    def client() -> Process:
        while may_send():
            sent[0] += 1
            yield from serve_one(sent[0] - 1)
        senders[0] -= 1
        check_finished()

    def source(rate: float) -> Process:
        while may_send():
            sent[0] += 1
            env.process(serve_one(sent[0] - 1))
            # stop at once when no further request is due, so the run ends with its last request
            if sent[0] == requests or (until_s is not None and env.now + 1.0 / rate >= until_s):
                break
            yield env.timeout(1.0 / rate)
        senders[0] -= 1
        check_finished()

    if rate_per_s is None:
        senders[0] = min(in_flight, requests)
        for _ in range(senders[0]):
            env.process(client())
    else:
        senders[0] = 1
        env.process(source(rate_per_s))
    return finished, sent
