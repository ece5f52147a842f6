"""What `coinfer.cost.evaluate` returns: every metric of a plan and where it comes from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from coinfer.cost.tiled_stage import TiledStageCost

ConstraintKind = Literal["memory", "deadline", "energy-budget", "capacity", "link", "reliability"]


@dataclass(frozen=True)
class Transfer:
    """One hop: the value `tensor` (a node id or graph input) sent from `source` to `target`.

    `size_bytes` is the value's raw size, `wire_bytes` what the link's codec puts on the wire
    (equal without a codec). `time_s` is the whole hop, `codec_s` of it the codec's encode and
    decode time.
    """

    tensor: str
    source: str
    target: str
    size_bytes: int
    wire_bytes: int
    time_s: float
    is_result: bool = False
    codec_s: float = 0.0

    @property
    def wire_time_s(self) -> float:
        """The hop's time on the link itself (without the codec's CPU time)."""
        return self.time_s - self.codec_s if self.codec_s else self.time_s


@dataclass(frozen=True)
class StageCost:
    """A stage (maximal run of nodes on one device) and what it costs.

    `queueing_s` is charged to the first stage a request runs on each loaded device; `sent_bytes`
    and `transfer_s` are for the values this stage sends to other devices (the cut after it).
    """

    device: str
    first: str
    last: str
    node_count: int
    flops: float
    compute_s: float
    queueing_s: float
    sent_bytes: int
    transfer_s: float


@dataclass(frozen=True)
class Violation:
    """A constraint the plan breaks, by how much, in words a user can act on."""

    kind: ConstraintKind
    subject: str
    value: float
    limit: float
    message: str


@dataclass(frozen=True)
class GroupSpan:
    """One parallel group spread over devices (coinfer.cost.parallel_groups): its span, what the
    sequential sum charges for it, and their compute parts."""

    group: str
    devices: tuple[str, ...]
    span_s: float
    sequential_s: float
    compute_s: float  # every member's time, as the sequential sum charges it
    critical_compute_s: float  # the members' times on the device that sets the span
    critical_device: str

    @property
    def credit_s(self) -> float:
        """What running the members at once saves against running them one after another."""
        return self.sequential_s - self.span_s


@dataclass(frozen=True)
class Breakdown:
    """Latency, energy, money, reliability and throughput of one plan (SI units throughout).

    Latency is end to end for one request: compute + transfer (including the result's return to
    the origin) + queueing. `bottleneck_s` is the busiest device or link per request; a pipelined
    plan serves `throughput_rps = 1 / bottleneck_s` requests per second in steady state.
    """

    latency_s: float
    compute_s: float
    transfer_s: float
    queueing_s: float
    energy_j: float
    origin_energy_j: float
    energy_by_device_j: Mapping[str, float]
    cost_usd: float
    reliability: float
    bottleneck_s: float
    bottleneck: str
    throughput_rps: float
    memory_by_device_bytes: Mapping[str, int]
    stages: tuple[StageCost, ...]
    transfers: tuple[Transfer, ...]
    violations: tuple[Violation, ...]
    objective_value: float
    tiled_stages: tuple[TiledStageCost, ...] = ()  # the plan's tiled stages, in `Plan.tilings` order
    parallel_groups: tuple[GroupSpan, ...] = ()  # its groups spread over devices (coinfer.cost.parallel_groups)

    @property
    def feasible(self) -> bool:
        return not self.violations

    @property
    def unreliability(self) -> float:
        """The probability that a request fails: 1 - reliability (an objective metric)."""
        return 1.0 - self.reliability

    @property
    def cut_bytes(self) -> int:
        """Bytes that cross between devices, the result's return included (raw, before codecs), and
        the crops, output tiles and halos of tiled stages."""
        return sum(t.size_bytes for t in self.transfers) + sum(c.moved_bytes for c in self.tiled_stages)

    @property
    def wire_bytes(self) -> int:
        """Bytes on the wire between devices: `cut_bytes` after each link's codec (tiled stages send raw)."""
        return sum(t.wire_bytes for t in self.transfers) + sum(c.moved_bytes for c in self.tiled_stages)

    def metric(self, name: str) -> float:
        value = getattr(self, name)
        assert isinstance(value, float | int)
        return float(value)
