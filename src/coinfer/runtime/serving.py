"""A worker's per-request bookkeeping: which values have arrived, which stage runs next, what to send.

Pure logic over the route (coinfer.runtime.routing): no sockets, no threads. The worker feeds it
arrivals and it calls back `send(target, value, array)` for every value another device (or the
client, target `CLIENT`) must receive, and `run(stage, values)` for every stage whose inputs are
complete. A device runs its stages in order; a request is done on this device when its stages
have run and, at the origin, its results have gone to the client.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from coinfer.errors import WireError
from coinfer.graph import TensorSpec
from coinfer.runtime.routing import CLIENT, DeviceRoute, RunStage

REMEMBERED_REQUESTS = 100_000  # finished request ids kept to reject late duplicates, oldest forgotten first

Send = Callable[[str, int, str, np.ndarray], None]  # target, request id, value name, array
RunStageFn = Callable[[RunStage, dict[str, np.ndarray]], dict[str, np.ndarray]]
Dispatch = Callable[[int, str, np.ndarray], None]  # request id, crop value, array: to a pool's dispatcher


class Recent:
    """The last `size` keys added, the oldest forgotten first: what a device remembers having seen."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: set[Hashable] = set()
        self._order: deque[Hashable] = deque()

    def add(self, key: Hashable) -> None:
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self.size:
            self._keys.discard(self._order.popleft())

    def __contains__(self, key: object) -> bool:
        return key in self._keys


def check_planned(where: str, what: str, array: np.ndarray, spec: TensorSpec | None) -> None:
    """WireError unless `array` has the planned shape and dtype of `spec` (None, or no shape: unchecked)."""
    if spec is not None and spec.shape is not None and (
            tuple(array.shape) != spec.shape or (spec.dtype is not None and str(array.dtype) != spec.dtype)):
        raise WireError(f"{where}: {what} is {array.dtype}{list(array.shape)}, expected {spec.dtype}{list(spec.shape)}")


@dataclass
class RequestState:
    values: dict[str, np.ndarray] = field(default_factory=dict)
    next_stage: int = 0
    results_sent: set[str] = field(default_factory=set)
    started_s: float = field(default_factory=time.monotonic)


class RequestEngine:
    """The state machine of one device under one plan version."""

    def __init__(self, route: DeviceRoute, specs: dict[str, TensorSpec], send: Send, run: RunStageFn,
                 dispatch: Dispatch | None = None) -> None:
        self.route, self.specs, self.send, self.run, self.dispatch = route, specs, send, run, dispatch
        # crops of the pools this device scatters: handed to their dispatcher, which picks the device
        self.dispatched = frozenset(t.crop for p in route.pools if p.scatter == route.device for t in p.tiles)
        self.states: dict[int, RequestState] = {}
        self.finished = Recent(REMEMBERED_REQUESTS)

    def arrive(self, request_id: int, name: str, array: np.ndarray, source: str | None = None) -> bool:
        """Take one value for a request; runs what became runnable. True when the request is done here.

        `source` is the device that sent it (CLIENT for the client), when the receiver knows it.
        Raises WireError for a value this device does not expect (or not from that source), of the
        wrong shape or dtype, or one that came twice; StageFailure (a WorkerError) when a stage raises.
        """
        self._check(request_id, name, array)
        expected = self.route.senders.get(name)
        if source is not None and expected is not None and source not in expected:
            raise WireError(f"device {self.route.device!r}: value {name!r} of request {request_id} came from "
                            f"{source}, but the plan has {' or '.join(sorted(expected))} send it; dropped")
        state = self.states.setdefault(request_id, RequestState())
        state.values[name] = array
        try:
            self._forward(request_id, state, name)
            self._advance(request_id, state)
        except Exception:
            self.drop(request_id)
            raise
        if self._done(state):
            del self.states[request_id]
            self.finished.add(request_id)
            return True
        return False

    def drop(self, request_id: int) -> None:
        self.states.pop(request_id, None)
        self.finished.add(request_id)

    def expire(self, older_than_s: float) -> list[int]:
        """Drop requests that started more than `older_than_s` ago and are still incomplete here (a
        value that never came: its sender failed, or the client gave up); the ids dropped."""
        cutoff = time.monotonic() - older_than_s
        stale = [rid for rid, state in self.states.items() if state.started_s < cutoff]
        for rid in stale:
            self.drop(rid)
        return stale

    def _check(self, request_id: int, name: str, array: np.ndarray) -> None:
        where = f"device {self.route.device!r}"
        if name not in self.route.expects:
            expected = ", ".join(sorted(self.route.expects)[:8]) or "nothing"
            raise WireError(f"{where} does not expect value {name!r} (it expects {expected})")
        if request_id in self.finished:
            raise WireError(f"{where}: request {request_id} is already finished or failed here; value {name!r} dropped")
        state = self.states.get(request_id)
        if state is not None and name in state.values:
            raise WireError(f"{where}: value {name!r} of request {request_id} came twice; the second is dropped")
        check_planned(where, f"value {name!r} of request {request_id}", array, self.specs.get(name))

    def _forward(self, request_id: int, state: RequestState, name: str) -> None:
        array = state.values[name]
        for target in self.route.sends.get(name, ()):
            self.send(target, request_id, name, array)
        if name in self.dispatched and self.dispatch is not None:
            self.dispatch(request_id, name, array)
        if name in self.route.results and name not in state.results_sent:
            self.send(CLIENT, request_id, name, array)
            state.results_sent.add(name)

    def _advance(self, request_id: int, state: RequestState) -> None:
        stages = self.route.stages
        while state.next_stage < len(stages) and stages[state.next_stage].needs <= state.values.keys():
            stage = stages[state.next_stage]
            produced = self.run(stage, state.values)
            state.values.update(produced)
            state.next_stage += 1
            for name in produced:
                self._forward(request_id, state, name)

    def _done(self, state: RequestState) -> bool:
        return state.next_stage == len(self.route.stages) and len(state.results_sent) == len(self.route.results)
