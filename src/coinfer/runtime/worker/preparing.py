"""The preparer thread: turns deploy messages and blob chunks into installed deployments, off the I/O thread.

A deployment arrives in three steps, each a control message from an authorised client:

1. `deploy`: the message is checked (coinfer.runtime.worker.deployment.parse_deploy), then the memory it
   needs (weights this worker does not hold yet, plus the activations the plan predicts) is
   compared with what the worker has, and the disk its missing blobs need with the cache's free
   space. Refused with both figures named, before anything is loaded; else it is *pending* and
   the reply lists the blobs the cache lacks. A secure worker's gate now admits the peers it names.
2. BLOB messages: the chunks of each missing blob, in order, written to the cache and hashed
   (coinfer.runtime.worker.blob_cache); each is acknowledged, which paces the client.
3. `activate`: the weights are loaded (memory-mapped), the stages built, the links opened, and the
   deployment handed to the compute thread; the reply says what it serves. Deploying a version
   that is active replaces it (the client does so to restart link traces once weights are shipped).

A pending deployment that is not activated within `PENDING_TTL_S` is dropped. Every reply goes
back through the I/O thread, which owns the socket (`reply`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coinfer.errors import CoinferError, WireError
from coinfer.runtime import wire
from coinfer.runtime.blobs import check_sha256
from coinfer.runtime.security import Gate
from coinfer.runtime.worker import memory
from coinfer.runtime.worker.blob_cache import BlobCache
from coinfer.runtime.worker.compute import Compute, Install
from coinfer.runtime.worker.config import WorkerConfig
from coinfer.runtime.worker.deployment import DeploymentError, Pending, build_deployment, parse_deploy
from coinfer.runtime.worker.outgoing import Outgoing
from coinfer.runtime.worker.resident import Framework, ResidentWeights
from coinfer.units import format_bytes

log = logging.getLogger(__name__)

PENDING_TTL_S = 600.0
MAX_PENDING = 8
MAX_DEPLOYMENTS = 64
QUEUE_SIZE = 32  # jobs waiting; a client keeps at most blobs.WINDOW chunks unacknowledged
Reply = Callable[[Any, dict[str, Any]], None]  # (the requester's identity, the reply body)


@dataclass(frozen=True)
class DeployJob:
    identity: Any
    body: dict[str, Any]


@dataclass(frozen=True)
class ChunkJob:
    identity: Any
    header: wire.Header
    payload: memoryview


@dataclass(frozen=True)
class ActivateJob:
    identity: Any
    plan_version: int


Job = DeployJob | ChunkJob | ActivateJob


class Preparer:
    def __init__(self, config: WorkerConfig, cache: BlobCache, resident: ResidentWeights, compute: Compute,
                 outgoing: Outgoing, gate: Gate | None, reply: Reply) -> None:
        self.config, self.cache, self.resident, self.compute = config, cache, resident, compute
        self.outgoing, self.gate, self.reply = outgoing, gate, reply
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self.pending: dict[int, Pending] = {}
        self._held: dict[int, frozenset[str]] = {}  # plan version -> the blobs it holds
        self._held_lock = threading.Lock()  # `released` runs on the compute thread
        self._thread = threading.Thread(target=self._loop, name="coinfer-prepare", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):  # a full queue ends too: the loop stops at the next job
            self.jobs.put_nowait(None)
        self._thread.join(timeout=5)

    def offer(self, job: Job) -> bool:
        """Queue a job without ever blocking the caller (the I/O thread); False when full."""
        try:
            self.jobs.put_nowait(job)
            return True
        except queue.Full:
            return False

    def released(self, plan_version: int) -> None:
        """Called (from the compute thread) once a deployment is undeployed."""
        with self._held_lock:
            self._held.pop(plan_version, None)
        self.resident.release(plan_version)
        if self.gate is not None:
            self.gate.forget(plan_version)

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            self._expire()
            try:
                body = self._run(job)
            except (CoinferError, OSError, ValueError) as exc:  # each says what is wrong; the worker serves on
                body = {"ok": False, "error": str(exc)}
            except Exception as exc:  # a bug here must not stop deployments; the client gets its text
                log.exception("preparing %s failed", type(job).__name__)
                body = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.reply(job.identity, body)

    def _run(self, job: Job) -> dict[str, Any]:
        if isinstance(job, DeployJob):
            return self._deploy(job.body)
        if isinstance(job, ChunkJob):
            return self._chunk(job.header, job.payload)
        return self._activate(job.plan_version)

    def _expire(self) -> None:
        now = time.monotonic()
        for version in [v for v, p in self.pending.items() if now - p.received_s > PENDING_TTL_S]:
            log.warning("%s: dropped plan version %d, deployed but not activated within %.0f s",
                        self.config.name, version, PENDING_TTL_S)
            self._forget_pending(version)

    def _forget_pending(self, version: int) -> None:
        pending = self.pending.pop(version, None)
        if pending is not None:
            for sha in set(pending.blobs) & self.cache.receiving():
                if not any(sha in p.blobs for p in self.pending.values()):
                    self.cache.abandon(sha)
        if self.gate is not None and version not in self._held:
            self.gate.forget(version)

    # -- the three steps --------------------------------------------------------------------

    def _deploy(self, body: dict[str, Any]) -> dict[str, Any]:
        pending = parse_deploy(body, self.config)
        version, where = pending.doc.plan_version, f"deploy of plan version {pending.doc.plan_version}"
        if len(self.pending) >= MAX_PENDING and version not in self.pending:
            raise DeploymentError(f"{where}: {len(self.pending)} deployments wait for activation here already")
        if len(self._held) >= MAX_DEPLOYMENTS and version not in self._held:
            raise DeploymentError(f"{where}: this worker holds {len(self._held)} deployments, its most; undeploy some")
        self._check_room(pending, where)
        self._forget_pending(version)
        self.pending[version] = pending
        if self.gate is not None:
            self.gate.allow_peers(version, {d: k.encode() for d, k in pending.doc.peer_keys.items()})
        missing = sorted(sha for sha in pending.blobs if not self.cache.has(sha))
        return {"ok": True, "plan_version": version, "missing": missing}

    def _check_room(self, pending: Pending, where: str) -> None:
        held = self.resident.resident()
        new_bytes = sum(b.size_bytes for b in pending.blobs.values() if b.sha256 not in held)
        need = new_bytes + pending.working_set_bytes
        available = memory.available_bytes()
        if self.config.memory_bytes is not None:
            available = min(available, self.config.memory_bytes - self.resident.bytes_held())
        if need > available:
            cap = f" (--memory-bytes {format_bytes(self.config.memory_bytes)})" if self.config.memory_bytes else ""
            raise DeploymentError(
                f"{where} on {self.config.name} needs {format_bytes(need)} of memory ({format_bytes(new_bytes)} of "
                f"weights it does not hold yet, {format_bytes(pending.working_set_bytes)} of activations) but "
                f"{format_bytes(max(0, available))} are available{cap}; place fewer layers on {pending.doc.device} "
                "or give the worker more memory")
        disk = sum(b.size_bytes for b in pending.blobs.values() if not self.cache.has(b.sha256))
        free = self.cache.free_disk_bytes()
        if disk > free:
            raise DeploymentError(f"{where} on {self.config.name} needs {format_bytes(disk)} in its blob cache "
                                  f"{self.cache.directory} but only {format_bytes(free)} are free; free the disk or "
                                  "give --cache-dir elsewhere")

    def _chunk(self, header: wire.Header, payload: memoryview) -> dict[str, Any]:
        sha = check_sha256(header.name, "blob chunk")
        if len(header.shape) != 2:
            raise WireError(f"blob chunk {sha[:12]}: the shape must be (offset, total bytes)")
        offset, total = header.shape
        wanted = [p.blobs[sha] for p in self.pending.values() if sha in p.blobs]
        if not wanted or wanted[0].size_bytes != total:
            raise WireError(f"blob chunk {sha[:12]}: no pending deployment here lists that blob with {total} bytes; "
                            "deploy first, then send the blobs its reply asks for")
        if self.cache.has(sha):
            return {"ok": True, "sha256": sha, "received": total, "complete": True}
        complete = self.cache.receive(sha, offset, total, payload)
        return {"ok": True, "sha256": sha, "received": offset + payload.nbytes, "complete": complete}

    def _activate(self, version: int) -> dict[str, Any]:
        start = time.perf_counter()
        pending = self.pending.get(version)
        if pending is None:
            raise DeploymentError(f"activate: plan version {version} is not pending here; deploy it first")
        missing = sorted(sha[:12] for sha in pending.blobs if not self.cache.has(sha))
        if missing:
            raise DeploymentError(f"activate of plan version {version}: {len(missing)} blob(s) have not arrived yet "
                                  f"({', '.join(missing[:3])}); send them first")
        framework: Framework = "torch" if pending.doc.program.get("kind") == "torch" else "onnx"
        try:
            loaded = self.resident.acquire(version, pending.blobs.values(), self.cache.path, framework)
            deployment = build_deployment(pending, loaded, self.config)
        except BaseException:
            if version not in self._held:  # a failed redeploy leaves the active one as it was
                self.resident.release(version)
            raise
        del self.pending[version]
        with self._held_lock:
            self._held[version] = deployment.blobs
            keep = set().union(*self._held.values(), *(p.blobs for p in self.pending.values()))
        for sha in deployment.blobs:
            self.cache.touch(sha)
        self.outgoing.connect(deployment)
        self.compute.put(Install(deployment))
        self.cache.trim(keep)
        memory.trim()
        route = deployment.route
        return {"ok": True, "plan_version": version, "device": deployment.device,
                "stages": [s.label for s in route.stages], "results": list(route.results),
                "build_s": time.perf_counter() - start,
                "weights_bytes": sum(b.size_bytes for b in pending.blobs.values())}
