"""What one served request tells about the cluster: the observations every estimate is built from.

The runtime fills these from its workers' timings; the simulator fills them from its event
timeline. Times are seconds on the serving run's clock (`at_s`: when the observation ended).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HopSample:
    """One message of `size_bytes` over the link source -> target that took `seconds` from the
    first byte sent to the last byte received (queueing behind earlier messages excluded)."""

    source: str
    target: str
    size_bytes: int
    seconds: float
    at_s: float
    probe: bool = False  # a two-point link probe, not request traffic


@dataclass(frozen=True)
class StageSample:
    """One stage of one request on `device`: what it computed and how long the computation took
    (the measured compute, not any emulation hold), beside what the plan predicted for it."""

    device: str
    node_ids: tuple[str, ...]
    seconds: float
    predicted_s: float
    at_s: float
    behind_s: float = 0.0  # under device emulation: how much longer this machine took than the device played


@dataclass(frozen=True)
class RequestRecord:
    """One request served under plan `plan_version`: end-to-end latency (None when it failed),
    its stages and hops, and the energy each device spent on it (J)."""

    request_id: int
    plan_version: int
    sent_s: float
    latency_s: float | None
    stages: tuple[StageSample, ...] = ()
    hops: tuple[HopSample, ...] = ()
    energy_by_device_j: Mapping[str, float] = field(default_factory=dict)
    queue_lengths: Mapping[str, int] = field(default_factory=dict)  # requests waiting per device when it ran

    @property
    def ok(self) -> bool:
        return self.latency_s is not None

    @property
    def energy_j(self) -> float:
        return sum(self.energy_by_device_j.values())

    def bytes_sent(self, source: str, target: str) -> int:
        """Bytes this request put on the wire of the directed link source -> target (probes excluded)."""
        return sum(h.size_bytes for h in self.hops if (h.source, h.target) == (source, target) and not h.probe)
