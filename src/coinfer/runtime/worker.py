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
from coinfer.runtime.links import LinkSender, source_of
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


PROBE = "<probe>"  # the value name of two-point link probes (plan version 0, never given to an engine)


@dataclass
class RequestTelemetry:
    """What one request did on this worker: its stages' times and the hops that brought its values."""

    stages: list[dict[str, Any]] = field(default_factory=list)
    hops: list[dict[str, Any]] = field(default_factory=list)


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
        # a peer that reconnects (a restarted worker) takes over its identity instead of being refused
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.bind(config.listen)
        self.endpoint: str = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.inbox: queue.Queue[Any] = queue.Queue(maxsize=config.inbox_size)
        self.deployments: dict[int, Deployment] = {}
        self.engines: dict[int, RequestEngine] = {}
        self.stage_times: dict[tuple[int, int], StageTimes] = {}
        self.links: dict[str, LinkSender] = {}
        self.peers: dict[str, str] = {}  # device -> address, from the latest deployment naming it
        self.shapers: dict[str, Any] = {}  # device -> the LinkShaper of the link to it
        self.link_docs: dict[str, Any] = {}  # device -> the emulation settings its shaper was built from
        self.telemetry: dict[tuple[int, int], RequestTelemetry] = {}  # (plan version, request id)
        self._current: RequestTelemetry | None = None  # the request the compute thread is serving
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
                hop = self._hop(identity, message)
                if message.header.plan_version == 0 and message.header.name == PROBE:
                    self._probe_arrived(hop)
                    return
                array = wire.read_tensor(message)
                self.inbox.put((message.header, array, hop))  # blocks when full: backpressure
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

    def _hop(self, identity: Any, message: wire.Message) -> dict[str, Any] | None:
        """The hop that brought a message: its source device, wire bytes and transfer time."""
        source = source_of(identity.bytes if hasattr(identity, "bytes") else identity)
        sent_ns = message.header.sent_unix_ns
        if source is None or not sent_ns:
            return None  # from the client, or a sender that does not stamp
        size = message.header.payload_bytes + message.header.meta_bytes
        return {"source": source, "target": self.config.name, "size_bytes": size,
                "seconds": max(0.0, (time.time_ns() - sent_ns) / 1e9), "at_unix_s": time.time()}

    def _probe_arrived(self, hop: dict[str, Any] | None) -> None:
        with self.lock:
            client = self.client
        if hop is not None and client is not None:
            client.send_json(wire.Kind.CONTROL, {"op": "telemetry", "probe": hop})

    def _send_probe(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send two-point probe messages (REFERENCE section 4) of the given sizes to a peer, in order."""
        target, sizes = str(body["target"]), [int(b) for b in body["sizes_bytes"]]
        if any(not 0 < b <= 64 << 20 for b in sizes):
            return {"ok": False, "error": f"probe sizes must be 1 B .. 64 MiB, got {sizes}"}
        with self.lock:
            link = self.links.get(target) or self._open_link(target)
        if link is None:
            return {"ok": False, "error": f"{self.config.name} knows no address for {target!r}; deploy a plan first"}
        for size in sizes:
            link.send_tensor(0, 0, PROBE, np.zeros(size, dtype=np.uint8))
        return {"ok": True}

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
            if op == "probe":
                return self._send_probe(body)
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
        known = "health, deploy, stats, probe, cancel, undeploy, shutdown"
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
        """Open (or re-aim) the links this deployment sends over.

        A link whose emulation is unchanged keeps its shaper, so a new plan version (a live
        switch) neither resets the link's queue nor restarts its bandwidth trace."""
        with self.lock:
            if self.client is None or self.client.address != d.client_address:
                if self.client is not None:
                    self.client.stop()
                self.client = self._start_link(d.client_address, None, "client")
            self.peers.update(d.peers)
            for target, doc in d.link_docs.items():
                if self.link_docs.get(target) != doc:
                    self.link_docs[target] = doc
                    self.shapers[target] = d.shapers[target]
                    if target in self.links:
                        self.links[target].shaper = d.shapers[target]
            for target in {t for ts in d.route.sends.values() for t in ts}:
                self._open_link(target)

    def _open_link(self, target: str) -> LinkSender | None:
        """The sender to `target` at its latest address (caller holds the lock); None if unknown."""
        address = self.peers.get(target)
        if address is None:
            return None
        link = self.links.get(target)
        if link is None or link.address != address:
            if link is not None:
                link.stop()
            link = self.links[target] = self._start_link(address, self.shapers.get(target), target)
        return link

    def _start_link(self, address: str, shaper: Any, name: str) -> LinkSender:
        link = LinkSender(self.context, address, shaper, "none", name, sender=self.config.name)
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
                self.telemetry.pop((item[1], item[2]), None)
            elif isinstance(item, tuple) and item[0] == "undeploy":
                self.engines.pop(item[1], None)
                self.deployments.pop(item[1], None)
                for key in [k for k in self.telemetry if k[0] == item[1]]:
                    del self.telemetry[key]
            else:
                self._arrive(*item)

    def _install(self, d: Deployment) -> None:
        version = d.plan_version

        def send(target: str, request_id: int, name: str, array: np.ndarray) -> None:
            link = self.client if target == CLIENT else self.links[target]
            assert link is not None
            link.send_tensor(version, request_id, name, array, d.codecs.get(target, "none"))

        def run(stage: RunStage, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return self._run_stage(d, stage, values)

        self.deployments[version] = d
        self.engines[version] = RequestEngine(d.route, dict(d.executor.index.specs), send, run)

    def _arrive(self, header: wire.Header, array: np.ndarray, hop: dict[str, Any] | None) -> None:
        engine = self.engines.get(header.plan_version)
        if engine is None:
            self._report(f"{header.describe()}: plan version {header.plan_version} is not deployed on "
                         f"{self.config.name} (deployed: {sorted(self.engines) or 'none'})",
                         header.request_id, header.plan_version)
            return
        key = (header.plan_version, header.request_id)
        watch = self.deployments[header.plan_version].telemetry
        if watch:
            self._current = self.telemetry.setdefault(key, RequestTelemetry())
            if hop is not None:
                self._current.hops.append({**hop, "value": header.name})
        try:
            if engine.arrive(header.request_id, header.name, array) and watch:
                self._send_telemetry(header, self.telemetry.pop(key))
        except StageFailure as exc:
            self.telemetry.pop(key, None)
            self._report(f"stage on {self.config.name} failed at node {exc.node_id!r}: {exc.error}",
                         header.request_id, header.plan_version, node=exc.node_id, exception=exc.error)
        except WireError as exc:
            self.telemetry.pop(key, None)
            self._report(str(exc), header.request_id, header.plan_version)
        finally:
            self._current = None

    def _send_telemetry(self, header: wire.Header, t: RequestTelemetry) -> None:
        with self.lock:
            client = self.client
        if client is not None:
            body = {"op": "telemetry", "device": self.config.name, "request_id": header.request_id,
                    "plan_version": header.plan_version, "stages": t.stages, "hops": t.hops,
                    "inbox": self.inbox.qsize()}
            client.send_json(wire.Kind.CONTROL, body, header.request_id, header.plan_version)

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
        if self._current is not None:
            self._current.stages.append({"index": stage.index, "node_ids": list(stage.node_ids),
                                         "compute_s": compute_s, "held_s": time.perf_counter() - start,
                                         "target_s": target_s, "at_unix_s": time.time()})
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
