"""The control protocol: one handler per op, in a table. Every op comes from an authorised client.

    health     who the worker is, what it holds, whether its compute thread is alive
    heartbeat  the cheap liveness answer a client's watchdog asks for several times a second, with
               each stage's recent time and how long ago each peer was last heard on the data socket
               (its links' keepalives; coinfer.runtime.watchdog)
    stats      per stage times, tiles stolen, per link traffic, recent errors, of one plan version; the
               generation sessions held and their state's bytes
    deploy     step 1 of a deployment (coinfer.runtime.worker.preparing); answered by the preparer
    activate   step 3 of a deployment; answered by the preparer
    undeploy   drop a plan version (its requests, its weights once no other deployment holds them)
    cancel     forget what this worker holds of one request (it failed elsewhere)
    end_session  free a generation session's state here (its KV cache; coinfer.runtime.worker.sessions)
    probe      send two-point link probes of the given sizes to a peer (REFERENCE section 4)
    shutdown   stop serving

A handler returns the reply, or `LATER` when another thread will send it. The client's chunks of
weight blobs are BLOB messages on the same socket (coinfer.runtime.wire), not an op.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coinfer.profile.host import cpu_model
from coinfer.runtime.worker.compute import Cancel, Compute, EndSession, Undeploy
from coinfer.runtime.worker.config import WorkerConfig
from coinfer.runtime.worker.outgoing import Outgoing
from coinfer.runtime.worker.preparing import ActivateJob, DeployJob, Preparer

PROBE = "<probe>"  # the value name of two-point link probes (plan version 0, never given to an engine)
MAX_PROBE_BYTES = 64 << 20
LATER = None  # a handler's "the reply comes from another thread"


@dataclass
class Control:
    config: WorkerConfig
    compute: Compute
    preparer: Preparer
    outgoing: Outgoing
    stopping: threading.Event
    data_port: int
    errors: Callable[[], list[str]]
    heard_s: Callable[[], dict[str, float]]  # seconds since each peer device's last data message
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex)  # this process's id: a restart shows

    def handle(self, identity: Any, body: dict[str, Any]) -> dict[str, Any] | None:
        op = body.get("op")
        handler = self.table().get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown control op {str(op)[:40]!r}; known: {', '.join(self.table())}"}
        try:
            return handler(identity, body)
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"op {op}: {type(exc).__name__}: {exc}"}

    def table(self) -> dict[str, Callable[[Any, dict[str, Any]], dict[str, Any] | None]]:
        return {"health": self.health, "heartbeat": self.heartbeat, "stats": self.stats, "deploy": self.deploy,
                "activate": self.activate, "undeploy": self.undeploy, "cancel": self.cancel, "probe": self.probe,
                "end_session": self.end_session, "shutdown": self.shutdown}

    def health(self, identity: Any, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "name": self.config.name, "incarnation": self.incarnation,
                "versions": self.compute.versions(),
                "pending": sorted(self.preparer.pending), "emulate": self.config.emulate,
                "threads": self.config.threads, "data_port": self.data_port, "secure": self.config.secure,
                "compute": "alive" if self.compute.alive else (self.compute.failure or "stopped"),
                "queued": self.compute.inbox.qsize(), "host": host_description()}

    def heartbeat(self, identity: Any, body: dict[str, Any]) -> dict[str, Any]:
        beat = _int(body.get("beat", 0), "beat")
        return {"ok": True, "name": self.config.name, "beat": beat, "incarnation": self.incarnation,
                "queued": self.compute.inbox.qsize(),
                "compute": "alive" if self.compute.alive else (self.compute.failure or "stopped"),
                "stages": self.compute.recent_stage_s(), "heard_s": self.heard_s()}

    def stats(self, identity: Any, body: dict[str, Any]) -> dict[str, Any]:
        version = _int(body.get("plan_version", 0), "plan_version")
        return {"ok": True, "name": self.config.name, "stages": self.compute.stage_stats(version),
                "stolen_tiles": self.compute.stolen_tiles(version), "links": self.outgoing.stats(),
                "sessions": self.compute.sessions_held(), "errors": self.errors()[-20:]}

    def deploy(self, identity: Any, body: dict[str, Any]) -> dict[str, Any] | None:
        return LATER if self.preparer.offer(DeployJob(identity, body)) else _busy()

    def activate(self, identity: Any, body: dict[str, Any]) -> dict[str, Any] | None:
        job = ActivateJob(identity, _int(body.get("plan_version"), "plan_version"))
        return LATER if self.preparer.offer(job) else _busy()

    def undeploy(self, identity: Any, body: dict[str, Any]) -> dict[str, Any]:
        self.compute.put(Undeploy(_int(body.get("plan_version"), "plan_version")))
        return {"ok": True}

    def cancel(self, identity: Any, body: dict[str, Any]) -> dict[str, Any]:
        self.compute.put(Cancel(_int(body.get("plan_version"), "plan_version"),
                                _int(body.get("request_id"), "request_id")))
        return {"ok": True}

    def end_session(self, identity: Any, body: dict[str, Any]) -> dict[str, Any]:
        group = body.get("group")
        if not isinstance(group, str) or not 0 < len(group) <= 100:
            return {"ok": False, "error": "end_session needs group (the session group's name) and session"}
        self.compute.put(EndSession(group, _int(body.get("session"), "session")))
        return {"ok": True}

    def probe(self, identity: Any, body: dict[str, Any]) -> dict[str, Any]:
        target, sizes = body.get("target"), body.get("sizes_bytes")
        if not isinstance(target, str) or not isinstance(sizes, list) or not 0 < len(sizes) <= 64:
            return {"ok": False, "error": "probe needs target (a device) and sizes_bytes (1 to 64 sizes)"}
        sizes = [_int(b, "sizes_bytes") for b in sizes]
        if any(not 0 < b <= MAX_PROBE_BYTES for b in sizes):
            return {"ok": False, "error": f"probe sizes must be 1 B .. 64 MiB, got {sizes[:8]}"}
        link = self.outgoing.to(target)
        if link is None:
            return {"ok": False, "error": f"{self.config.name} knows no address for {target[:40]!r}; deploy first"}
        for size in sizes:
            link.send_tensor(0, 0, PROBE, np.zeros(size, dtype=np.uint8))
        return {"ok": True}

    def shutdown(self, identity: Any, body: dict[str, Any]) -> dict[str, Any]:
        self.stopping.set()
        return {"ok": True}


def host_description() -> dict[str, Any]:
    """What a profile measured here records of the machine (coinfer.runtime.remote_profile)."""
    return {"cpu_model": cpu_model(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch_version": _version("torch"),
            "onnxruntime_version": _version("onnxruntime")}


def _version(package: str) -> str | None:
    """An installed package's version, without importing it (a health check must stay cheap)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
        raise ValueError(f"field {name} must be a non-negative integer, not {str(value)[:40]!r}")
    return value


def _busy() -> dict[str, Any]:
    return {"ok": False, "busy": True, "error": "the worker is still preparing earlier deployments; retry shortly"}
