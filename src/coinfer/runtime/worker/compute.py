"""The compute thread: owns every request's state and runs stages, one at a time, as one device would.

It takes typed items from its inbox: `Install` and `Undeploy` a deployment, `Cancel` a request,
`EndSession` (free a generation's state here), and `Arrival` of a tensor. With emulation on it
holds each stage until it has taken the time the profile predicts for the device it plays.
Per-request state that waits longer than `REQUEST_TTL_S` for a value that never comes is dropped,
sessions idle for `SESSION_TTL_S` are freed, and statistics keep a bounded history, so a
long-running worker's memory stays flat. An exception while handling one item is reported
to the client and the thread goes on; if the thread itself ever stops, `failure` says why and the
worker answers every later tensor with that error instead of queueing it.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coinfer.errors import WireError
from coinfer.runtime import wire
from coinfer.runtime.routing import RunStage
from coinfer.runtime.serving import RequestEngine
from coinfer.runtime.stages import StageFailure
from coinfer.runtime.worker.deployment import Deployment
from coinfer.runtime.worker.outgoing import Outgoing
from coinfer.runtime.worker.pooled_tiles import PooledTiles
from coinfer.runtime.worker.sessions import SESSION_TTL_S, Sessions, session_of

log = logging.getLogger(__name__)

REQUEST_TTL_S = 600.0  # far above any request's timeout (60 s by default)
EXPIRY_EVERY_S = 10.0
KEPT_RUNS = 10_000  # stage times kept per stage for the statistics
RECENT_RUNS = 20  # the runs a heartbeat's "recent" stage time is the median of
Report = Callable[..., None]  # (error, request_id=0, plan_version=0, **fields)


@dataclass(frozen=True)
class Arrival:
    header: wire.Header
    array: np.ndarray
    hop: dict[str, Any] | None
    source: str | None  # the sending device (CLIENT for the client) when the receiver knows it


@dataclass(frozen=True)
class Install:
    deployment: Deployment


@dataclass(frozen=True)
class Cancel:
    plan_version: int
    request_id: int


@dataclass(frozen=True)
class Undeploy:
    plan_version: int


@dataclass(frozen=True)
class EndSession:
    group: str
    session: int


@dataclass(frozen=True)
class RunTile:
    """A pooled tile whose crop this device made and handed to itself (coinfer.runtime.stealing)."""

    plan_version: int
    request_id: int
    crop: str
    array: np.ndarray


Item = Arrival | Install | Cancel | Undeploy | RunTile | EndSession


class _Idle:
    """What the loop sees when nothing came for a while (it only expires stale state)."""


_IDLE = _Idle()


@dataclass
class RequestTelemetry:
    """What one request did on this worker: its stages' times and the hops that brought its values."""

    stages: list[dict[str, Any]] = field(default_factory=list)
    hops: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StageTimes:
    compute_s: deque[float] = field(default_factory=lambda: deque(maxlen=KEPT_RUNS))  # measured on this machine
    held_s: deque[float] = field(default_factory=lambda: deque(maxlen=KEPT_RUNS))  # after emulation's stretch
    runs: int = 0


class Compute:
    def __init__(self, name: str, outgoing: Outgoing, report: Report, on_undeploy: Callable[[int], None],
                 tensor_slots: threading.Semaphore) -> None:
        self.name, self.outgoing, self.report, self.on_undeploy = name, outgoing, report, on_undeploy
        self.tensor_slots = tensor_slots  # released for every Arrival taken: the I/O thread's backpressure
        self.inbox: queue.Queue[Item | _Idle | None] = queue.Queue()
        self.deployments: dict[int, Deployment] = {}
        self.engines: dict[int, RequestEngine] = {}
        self.pooled: dict[int, PooledTiles] = {}  # per plan version run with work stealing
        self.telemetry: dict[tuple[int, int], RequestTelemetry] = {}
        self.stage_times: dict[tuple[int, int], StageTimes] = {}
        self.failure: str | None = None
        self.sessions = Sessions()  # a generation's per-session state (the KV cache of this device's layers)
        self._current: RequestTelemetry | None = None
        self._request_id = 0  # the request whose stages the engine is running (its session's state)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="coinfer-compute", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.inbox.put(None)
        self._thread.join(timeout=5)

    def put(self, item: Item) -> None:
        self.inbox.put(item)

    def versions(self) -> list[int]:
        with self._lock:
            return sorted(self.deployments)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.failure is None

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        next_expiry_s = time.monotonic() + EXPIRY_EVERY_S
        try:
            while True:
                try:
                    item = self.inbox.get(timeout=EXPIRY_EVERY_S)
                except queue.Empty:
                    item = _IDLE
                if item is None:
                    return
                if isinstance(item, Arrival):
                    self.tensor_slots.release()
                if item is not _IDLE:
                    self._handle(item)
                if time.monotonic() > next_expiry_s:
                    self._expire()
                    next_expiry_s = time.monotonic() + EXPIRY_EVERY_S
        except BaseException as exc:  # the thread must never end unnoticed
            self.failure = f"the compute thread of {self.name} stopped: {type(exc).__name__}: {exc}"
            log.critical("%s", self.failure, exc_info=True)
            raise

    def _handle(self, item: Item | _Idle) -> None:
        try:
            if isinstance(item, Arrival):
                self._arrive(item)
            elif isinstance(item, Install):
                self._install(item.deployment)
            elif isinstance(item, Cancel):
                engine = self.engines.get(item.plan_version)
                if engine is not None:
                    engine.drop(item.request_id)
                if item.plan_version in self.pooled:
                    self.pooled[item.plan_version].drop(item.request_id)
                self.telemetry.pop((item.plan_version, item.request_id), None)
            elif isinstance(item, RunTile):
                self._run_tile(item)
            elif isinstance(item, Undeploy):
                self._undeploy(item.plan_version)
            elif isinstance(item, EndSession):
                with self._lock:
                    self.sessions.end(item.group, item.session)
        except Exception as exc:  # a bug in one item must not stop the device: report it, serve on
            log.exception("%s: handling %s failed", self.name, type(item).__name__)
            header = item.header if isinstance(item, Arrival) else item if isinstance(item, RunTile) else None
            self.report(f"{self.name} failed on {type(item).__name__.lower()}: {type(exc).__name__}: {exc}",
                        header.request_id if header else 0, header.plan_version if header else 0)

    def _install(self, d: Deployment) -> None:
        version = d.plan_version

        def send(target: str, request_id: int, name: str, array: np.ndarray) -> None:
            self.outgoing.send_tensor(target, version, request_id, name, array, d.codecs.get(target, "none"))

        def run(stage: RunStage, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return self._run_stage(d, stage, values)

        def send_token(target: str, request_id: int, name: str, array: np.ndarray) -> None:
            self.outgoing.send_tensor(target, version, request_id, name, array, "none")

        pooled = None
        if d.route.pool_stages or any(p.scatter == self.name for p in d.route.pools):
            pooled = self.pooled[version] = PooledTiles(
                d.route, d.stages.index.specs, send, send_token, run,
                lambda rid, name, array: self._to_engine(version, rid, name, array, self.name),
                lambda rid, crop, array: self.put(RunTile(version, rid, crop, array)))
        with self._lock:
            self.deployments[version] = d
            if d.session is not None:
                self.sessions.join(d.session.group, version, d.session.max_sessions)
        self.engines[version] = RequestEngine(d.route, dict(d.stages.index.specs), send, run,
                                              pooled.offer if pooled is not None else None)

    def _undeploy(self, version: int) -> None:
        self.engines.pop(version, None)
        self.pooled.pop(version, None)
        with self._lock:
            self.deployments.pop(version, None)
            self.sessions.leave(version)
            for key in [k for k in self.stage_times if k[0] == version]:
                del self.stage_times[key]
        for key in [k for k in self.telemetry if k[0] == version]:
            del self.telemetry[key]
        self.on_undeploy(version)

    def _expire(self) -> None:
        for version, engine in self.engines.items():
            pooled = self.pooled.get(version)
            for rid in [*engine.expire(REQUEST_TTL_S), *(pooled.expire(REQUEST_TTL_S) if pooled else ())]:
                self.telemetry.pop((version, rid), None)
                log.warning("%s: dropped request %d of plan version %d, incomplete after %.0f s", self.name, rid,
                            version, REQUEST_TTL_S)
        with self._lock:
            for group, session in self.sessions.expire():
                log.warning("%s: freed session %d of group %s, idle for %.0f s", self.name, session, group,
                            SESSION_TTL_S)

    def _arrive(self, a: Arrival) -> None:
        header = a.header
        engine = self.engines.get(header.plan_version)
        if engine is None:
            self.report(f"{header.describe()}: plan version {header.plan_version} is not deployed on "
                        f"{self.name} (deployed: {sorted(self.engines) or 'none'})",
                        header.request_id, header.plan_version, kind=wire.NOT_DEPLOYED)
            return
        pooled = self.pooled.get(header.plan_version)
        if pooled is not None and pooled.handles(header.name):
            hop = {**a.hop, "value": header.name} if a.hop is not None else None
            self._pooled(header.plan_version, header.request_id, hop,
                         lambda: pooled.arrive(header.request_id, header.name, a.array, a.source))
            return
        key = (header.plan_version, header.request_id)
        if self.deployments[header.plan_version].telemetry and a.hop is not None:
            self.telemetry.setdefault(key, RequestTelemetry()).hops.append({**a.hop, "value": header.name})
        self._to_engine(header.plan_version, header.request_id, header.name, a.array, a.source)

    def _to_engine(self, version: int, request_id: int, name: str, array: np.ndarray, source: str | None) -> None:
        """A value for the request engine of `version` (received, or a tile output gathered here)."""
        key = (version, request_id)
        watch = self.deployments[version].telemetry
        outer = self._current
        if watch:
            self._current = self.telemetry.setdefault(key, RequestTelemetry())
        self._request_id = request_id
        try:
            if self.engines[version].arrive(request_id, name, array, source) and watch:
                self._send_telemetry(version, request_id, self.telemetry.pop(key))
        except (StageFailure, WireError) as exc:
            self.telemetry.pop(key, None)
            self._report_failure(exc, request_id, version)
        finally:
            self._current = outer

    def _run_tile(self, item: RunTile) -> None:
        pooled = self.pooled.get(item.plan_version)
        if pooled is not None:  # else undeployed since: nothing to do
            self._pooled(item.plan_version, item.request_id, None,
                         lambda: pooled.run_tile(item.request_id, item.crop, item.array))

    def _pooled(self, version: int, request_id: int, hop: dict[str, Any] | None, handle: Callable[[], None]) -> None:
        """A pooled tile's crop or token handled; its stage time (under telemetry) reported on its own,
        since a device that only computes pooled tiles has no request state to keep it in."""
        watch = self.deployments[version].telemetry
        self._current = RequestTelemetry(hops=[hop] if hop else []) if watch else None
        try:
            handle()
            if self._current is not None and self._current.stages:
                self._send_telemetry(version, request_id, self._current)
        except (StageFailure, WireError) as exc:
            self._report_failure(exc, request_id, version)
        finally:
            self._current = None

    def _report_failure(self, exc: StageFailure | WireError, request_id: int, version: int) -> None:
        """A stage that raised (named by its node) or a value refused, to the client; the device serves on."""
        if isinstance(exc, StageFailure):
            self.report(f"stage on {self.name} failed at node {exc.node_id!r}: {exc.error}",
                        request_id, version, node=exc.node_id, exception=exc.error)
        else:
            self.report(str(exc), request_id, version)

    def _send_telemetry(self, version: int, request_id: int, t: RequestTelemetry) -> None:
        body = {"op": "telemetry", "device": self.name, "request_id": request_id,
                "plan_version": version, "stages": t.stages, "hops": t.hops,
                "inbox": self.inbox.qsize()}
        self.outgoing.to_client(wire.Kind.CONTROL, body, request_id, version)

    def _run_stage(self, d: Deployment, stage: RunStage, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        node_s: dict[str, float] | None = {} if self._current is not None else None  # timed only under telemetry
        state = None
        if d.session is not None:
            with self._lock:
                state = self.sessions.state(d.session.group, session_of(self._request_id), d.stages.state_makers)
        start = time.perf_counter()
        out = d.stages.run(stage, values, node_s, state)
        compute_s = time.perf_counter() - start
        target_s = d.stage_time_s.get(stage.index)
        hold_s = target_s - compute_s if target_s is not None else 0.0
        if hold_s > 0:
            time.sleep(hold_s)
        held_s = time.perf_counter() - start
        stretch = held_s / target_s if hold_s > 0 and target_s else None
        with self._lock:
            times = self.stage_times.setdefault((d.plan_version, stage.index), StageTimes())
            times.compute_s.append(compute_s)
            times.held_s.append(held_s)
            times.runs += 1
        if self._current is not None:
            self._current.stages.append({"index": stage.index, "node_ids": list(stage.node_ids),
                                         "compute_s": compute_s, "held_s": held_s,
                                         "target_s": target_s, "at_unix_s": time.time(),
                                         "node_s": _node_times(d, stage, node_s, stretch)})
        return out

    # -- statistics -------------------------------------------------------------------------

    def recent_stage_s(self) -> list[list[float]]:
        """[plan version, stage index, median held time of its last RECENT_RUNS runs, runs] per stage
        that ran: what a heartbeat carries, so that the client can see a stage slow down."""
        with self._lock:
            return [[version, index, statistics.median(list(t.held_s)[-RECENT_RUNS:]), t.runs]
                    for (version, index), t in sorted(self.stage_times.items()) if t.held_s]

    def sessions_held(self) -> dict[str, Any]:
        """Per session group: the sessions this worker holds and the bytes of their state."""
        with self._lock:
            return dict(self.sessions.held())

    def stolen_tiles(self, plan_version: int) -> dict[str, int]:
        """Per pool this device scatters under `plan_version` (by stitch node), tiles handed to another
        device than the plan's (work stealing); empty without it."""
        pooled = self.pooled.get(plan_version)
        return pooled.stolen if pooled is not None else {}

    def stage_stats(self, plan_version: int) -> list[dict[str, Any]]:
        with self._lock:
            d = self.deployments.get(plan_version)
            rows = []
            for (version, index), t in sorted(self.stage_times.items()):
                if version != plan_version or not t.compute_s:
                    continue
                stage = next((s for s in d.route.runnable_stages if s.index == index), None) if d else None
                rows.append({
                    "index": index, "stage": stage.label if stage else str(index), "runs": t.runs,
                    "compute_s": statistics.median(t.compute_s), "held_s": statistics.median(t.held_s),
                    "emulated_s": d.stage_time_s.get(index) if d else None,
                })
            return rows


def _node_times(d: Deployment, stage: RunStage, node_s: dict[str, float] | None,
                stretch: float | None) -> dict[str, float] | None:
    """Each node's time in a stage run, as the device this worker plays would take it: measured, or
    while emulation held the stage, the node's emulated time scaled as the stage's hold was (it
    slept for what the measured ops left of the stage's emulated time). None where the executor
    cannot time nodes apart (an ONNX stage)."""
    if stretch is not None:
        return {n: d.node_time_s[n] * stretch for n in stage.node_ids}
    if not node_s:
        return None
    return {n: node_s.get(n, 0.0) for n in stage.node_ids}  # a node of no op (a view folded away) takes none
