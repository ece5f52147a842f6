"""The worker: a long-running process that holds stages and serves requests (`coinfer worker`).

Three kinds of threads, so that receiving, computing and sending overlap (pipelining):

- the I/O thread owns the listening ZeroMQ ROUTER socket. It answers control messages (deploy,
  health, stats, undeploy, shutdown) at once and decodes tensors into a bounded inbox; when the
  inbox is full it stops reading, and ZeroMQ's high-water marks push back on the senders;
- the compute thread owns every request's state (coinfer.runtime.serving) and runs stages, one
  at a time, as one device would; with emulation on it then sleeps until the stage has taken
  the time the profile predicts for the device it plays;
- one `LinkSender` per peer (and one to the client) encodes, shapes and sends.

A deployment is identified by its plan version, so several plans can be loaded at once and a
request runs entirely under the version it started with. Nothing a peer sends can stop the worker:
a malformed frame, a wrong tensor, an unknown version or a failing stage becomes an error
message to the client (and a log line), and serving goes on.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coinfer.errors import CoinferError, WireError
from coinfer.runtime import wire
from coinfer.runtime.deployment import Deployment, DeploymentError, build_deployment
from coinfer.runtime.executor import StageFailure
from coinfer.runtime.links import LinkSender
from coinfer.runtime.routing import RunStage
from coinfer.runtime.serving import CLIENT, RequestEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    listen: str  # a ZeroMQ endpoint, tcp://HOST:PORT (port 0 picks a free one)
    name: str
    threads: int = 1
    max_payload_bytes: int = wire.DEFAULT_MAX_PAYLOAD_BYTES
    inbox_size: int = 64  # tensors waiting for the compute thread; the bound that gives backpressure
    emulate: str | None = None  # a catalogued device whose predicted stage times this worker keeps


@dataclass
class StageTimes:
    compute_s: list[float] = field(default_factory=list)  # measured on this machine
    held_s: list[float] = field(default_factory=list)  # after emulation's stretch (equal when off)


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        import zmq

        self.config = config
        self.zmq = zmq
        self.context: Any = zmq.Context.instance()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        # A hard cap per frame (chunks are at most wire.CHUNK_BYTES): a peer that sends a larger
        # frame is disconnected by ZeroMQ before the frame is held in memory.
        self.router.setsockopt(zmq.MAXMSGSIZE, wire.CHUNK_BYTES + (1 << 16))
        self.router.bind(config.listen)
        self.endpoint: str = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.inbox: queue.Queue[Any] = queue.Queue(maxsize=config.inbox_size)
        self.deployments: dict[int, Deployment] = {}
        self.engines: dict[int, RequestEngine] = {}
        self.stage_times: dict[tuple[int, int], StageTimes] = {}
        self.links: dict[str, LinkSender] = {}
        self.client: LinkSender | None = None
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    # -- I/O thread ------------------------------------------------------------------------

    def serve_forever(self) -> None:
        compute = threading.Thread(target=self._compute_loop, name="coinfer-compute", daemon=True)
        compute.start()
        poller = self.zmq.Poller()
        poller.register(self.router, self.zmq.POLLIN)
        try:
            while not self.stopping.is_set():
                if not poller.poll(100):
                    continue
                identity, *frames = self.router.recv_multipart(copy=False)
                self._receive(identity, frames)
        finally:
            self.stopping.set()
            self.inbox.put(None)
            compute.join(timeout=5)
            for link in [*self.links.values(), *([self.client] if self.client else [])]:
                link.stop()
                link.join(timeout=2)
            self.router.close()

    def _receive(self, identity: Any, frames: list[Any]) -> None:
        try:
            message = wire.unpack(frames, self.config.max_payload_bytes)
            if message.header.kind is wire.Kind.TENSOR:
                array = wire.read_tensor(message)
                self.inbox.put((message.header, array))  # blocks when full: backpressure
            else:
                body = wire.read_json(message)
                reply = self._control(body)
                self.router.send_multipart([identity, *wire.json_frames(wire.Kind.CONTROL, reply)])
        except (WireError, CoinferError) as exc:  # CodecError for an unknown codec name in a header
            header = getattr(exc, "header", None)
            if header is None:
                self._report(str(exc))
            else:
                self._report(str(exc), header.request_id, header.plan_version)

    def _control(self, body: dict[str, Any]) -> dict[str, Any]:
        op = body.get("op")
        try:
            if op == "health":
                return {"ok": True, "name": self.config.name, "versions": sorted(self.deployments),
                        "emulate": self.config.emulate, "threads": self.config.threads}
            if op == "deploy":
                return self._deploy(body)
            if op == "stats":
                return {"ok": True, **self._stats(int(body.get("plan_version", 0)))}
            if op == "cancel":  # a request failed elsewhere: forget what this worker holds of it
                self.inbox.put(("cancel", int(body["plan_version"]), int(body["request_id"])))
                return {"ok": True}
            if op == "undeploy":
                self.inbox.put(("undeploy", int(body["plan_version"])))
                return {"ok": True}
            if op == "shutdown":
                self.stopping.set()
                return {"ok": True}
        except (CoinferError, KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        known = "health, deploy, stats, cancel, undeploy, shutdown"
        return {"ok": False, "error": f"unknown control op {op!r}; known: {known}"}

    def _deploy(self, body: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            deployment = build_deployment(body, self.config)
        except DeploymentError as exc:
            return {"ok": False, "error": str(exc)}
        self._connect(deployment)
        self.inbox.put(("deploy", deployment))
        stages = [s.label for s in deployment.route.stages]
        return {"ok": True, "device": deployment.device, "stages": stages, "results": list(deployment.route.results),
                "build_s": time.perf_counter() - start}

    def _connect(self, d: Deployment) -> None:
        """Open (or re-aim) the links this deployment sends over."""
        with self.lock:
            if self.client is None or self.client.address != d.client_address:
                self.client = self._start_link(d.client_address, None, "none", "client")
            for target in {t for ts in d.route.sends.values() for t in ts}:
                address = d.peers[target]
                link = self.links.get(target)
                if link is None or link.address != address:
                    self.links[target] = self._start_link(address, d.shapers.get(target), d.codecs.get(target, "none"),
                                                          target)
                else:
                    link.shaper, link.codec = d.shapers.get(target), d.codecs.get(target, "none")

    def _start_link(self, address: str, shaper: Any, codec: str, name: str) -> LinkSender:
        link = LinkSender(self.context, address, shaper, codec, name)
        link.start()
        return link

    def _report(self, error: str, request_id: int = 0, plan_version: int = 0, **fields: Any) -> None:
        log.warning("%s: %s", self.config.name, error)
        with self.lock:
            self.errors.append(error)
            client = self.client
        if client is not None:
            body = {"worker": self.config.name, "error": error, "request_id": request_id, **fields}
            client.send_json(wire.Kind.ERROR, body, request_id, plan_version)

    # -- compute thread ---------------------------------------------------------------------

    def _compute_loop(self) -> None:
        while (item := self.inbox.get()) is not None:
            if isinstance(item, tuple) and item[0] == "deploy":
                self._install(item[1])
            elif isinstance(item, tuple) and item[0] == "cancel":
                engine = self.engines.get(item[1])
                if engine is not None:
                    engine.drop(item[2])
            elif isinstance(item, tuple) and item[0] == "undeploy":
                self.engines.pop(item[1], None)
                self.deployments.pop(item[1], None)
            else:
                self._arrive(*item)

    def _install(self, d: Deployment) -> None:
        version = d.plan_version

        def send(target: str, request_id: int, name: str, array: np.ndarray) -> None:
            link = self.client if target == CLIENT else self.links[target]
            assert link is not None
            link.send_tensor(version, request_id, name, array)

        def run(stage: RunStage, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return self._run_stage(d, stage, values)

        self.deployments[version] = d
        self.engines[version] = RequestEngine(d.route, dict(d.executor.index.specs), send, run)

    def _arrive(self, header: wire.Header, array: np.ndarray) -> None:
        engine = self.engines.get(header.plan_version)
        if engine is None:
            self._report(f"{header.describe()}: plan version {header.plan_version} is not deployed on "
                         f"{self.config.name} (deployed: {sorted(self.engines) or 'none'})",
                         header.request_id, header.plan_version)
            return
        try:
            engine.arrive(header.request_id, header.name, array)
        except StageFailure as exc:
            self._report(f"stage on {self.config.name} failed at node {exc.node_id!r}: {exc.error}",
                         header.request_id, header.plan_version, node=exc.node_id, exception=exc.error)
        except WireError as exc:
            self._report(str(exc), header.request_id, header.plan_version)

    def _run_stage(self, d: Deployment, stage: RunStage, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = d.executor.run(stage, values)
        compute_s = time.perf_counter() - start
        target_s = d.stage_time_s.get(stage.index)
        if target_s is not None and target_s > compute_s:
            time.sleep(target_s - compute_s)
        with self.lock:
            times = self.stage_times.setdefault((d.plan_version, stage.index), StageTimes())
            times.compute_s.append(compute_s)
            times.held_s.append(time.perf_counter() - start)
        return out

    # -- stats ------------------------------------------------------------------------------

    def _stats(self, plan_version: int) -> dict[str, Any]:
        d = self.deployments.get(plan_version)
        with self.lock:
            stages = []
            for (version, index), t in sorted(self.stage_times.items()):
                if version != plan_version or not t.compute_s:
                    continue
                stage = next(s for s in d.route.stages if s.index == index) if d else None
                stages.append({
                    "index": index, "stage": stage.label if stage else str(index), "runs": len(t.compute_s),
                    "compute_s": statistics.median(t.compute_s), "held_s": statistics.median(t.held_s),
                    "emulated_s": d.stage_time_s.get(index) if d else None,
                })
            links = {target: {"messages": link.stats.messages, "wire_bytes": link.stats.wire_bytes,
                              "raw_bytes": link.stats.raw_bytes,
                              "delivery_s": statistics.median(link.stats.delivery_s) if link.stats.delivery_s else None}
                     for target, link in self.links.items()}
            return {"name": self.config.name, "stages": stages, "links": links, "errors": list(self.errors[-20:])}
