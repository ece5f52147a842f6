"""How a run is made (`RunOptions`), and the two ways of naming where workers and the client are."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from coinfer.runtime.watchdog import DEFAULT_DOWN_AFTER_S
from coinfer.shaping import BandwidthTrace

Shaping = Literal["inproc", "kernel", "none"]
Endpoint = Callable[[str, "str | None"], str]  # (device, seen from device or None=client) -> its control tcp://...
ClientAddress = Callable[[str], str]  # device -> how that device's worker reaches the client's sink
Progress = Callable[[str, int, int], None]  # (device, weight bytes sent so far, bytes to send) while deploying


@dataclass(frozen=True)
class SessionGroup:
    """Where a stateful deployment (a causal LM's step) keeps its sessions on each worker: the prefill
    and decode deployments of one generation share a group (coinfer.runtime.worker.sessions)."""

    name: str
    max_sessions: int = 8


@dataclass(frozen=True)
class RunOptions:
    requests: int = 10
    in_flight: int = 1  # requests (batches, with micro_batch > 1) outstanding at once; above 1 the stages pipeline
    warmup: int = 1  # requests (batches) sent first and not counted (first-call costs)
    emulate: bool = False  # hold each stage for the plan's predicted time on its device
    shaping: Shaping = "inproc"
    traces: Mapping[tuple[str, str], BandwidthTrace] = field(default_factory=dict)
    verify: bool = False
    timeout_s: float = 60.0
    plan_version: int = 1
    deploy_timeout_s: float = 300.0  # per deploy step and per acknowledged chunk of weights
    connect_timeout_s: float = 10.0  # how long a worker may take to answer its first health check
    telemetry: bool = False  # workers report every request's stage times and hops (adaptive serving)
    trace_epoch_unix_s: float | None = None  # when the link traces start (None: at deploy); kept across switches
    micro_batch: int = 1  # requests packed into one batch along dimension 0; `requests` must be a multiple of it
    weights: str | Path | None = None  # a state dict to run with instead of the one the plan's graph names
    recover: bool = True  # watch the workers; re-plan around a lost device and replay its requests
    down_after_s: float = DEFAULT_DOWN_AFTER_S  # a worker silent this long is declared down (coinfer.runtime.watchdog)
    steal: bool = False  # fused tiles handed out at run time, idle devices stealing (coinfer.runtime.stealing)
    session: SessionGroup | None = None  # a generation's step program: keep each session's KV cache in this group
