"""What a simulation returns: every record, the plan switches, summaries and a timeline to plot.

Summaries are over completed requests. Percentiles interpolate linearly between the order
statistics (numpy's default). A request is *lost* when it was sent and never completed, and
*duplicated* when more than one record carries its id; both are counted by request id, and a
correct run has neither.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coinfer.adapt.records import HopSample, RequestRecord
from coinfer.plan import Plan
from coinfer.sim.conditions import Conditions, Link
from coinfer.sim.program import first_positions

TIMELINE_POINTS = 400  # samples of each traced link's bandwidth: enough for a figure's width


@dataclass(frozen=True)
class Switch:
    """An epoch change at `at_s`: requests sent from then on run plan version `to_version`."""

    at_s: float
    from_version: int
    to_version: int
    from_plan: str
    to_plan: str
    reason: str


@dataclass(frozen=True)
class Timeline:
    """Arrays for plotting. Per completed request (completion order): its end, latency and plan
    version. On a uniform grid over the run: each traced link's bandwidth (key "source->target")
    and the plan version new requests were given. `first_position[device][v]`: the cut of plan
    version v as the topological position of its first node on each server
    (`coinfer.sim.program.first_positions`)."""

    request_end_s: tuple[float, ...]
    request_latency_s: tuple[float, ...]
    request_version: tuple[int, ...]
    grid_s: tuple[float, ...]
    bandwidth_bits_per_s: Mapping[str, tuple[float, ...]]
    version_at_grid: tuple[int, ...]
    first_position: Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class SimResult:
    """One simulated run: `label` names the policy ("static" for a plan served unchanged)."""

    label: str
    plans: tuple[Plan, ...]  # by version; version 0 is the plan served first
    records: tuple[RequestRecord, ...]  # completion order
    switches: tuple[Switch, ...]
    probes: tuple[HopSample, ...]
    sent: int
    lost: int
    duplicated: int
    deadline_s: float | None
    duration_s: float
    timeline: Timeline

    def latencies_s(self) -> np.ndarray:
        return np.array([r.latency_s for r in self.records if r.latency_s is not None], dtype=float)

    def latency_percentile_s(self, q: float) -> float:
        values = self.latencies_s()
        return float(np.percentile(values, q)) if values.size else math.nan

    @property
    def latency_p50_s(self) -> float:
        return self.latency_percentile_s(50)

    @property
    def latency_p95_s(self) -> float:
        return self.latency_percentile_s(95)

    @property
    def latency_mean_s(self) -> float:
        values = self.latencies_s()
        return float(values.mean()) if values.size else math.nan

    @property
    def throughput_rps(self) -> float:
        """Completed requests per second of the whole run."""
        return len(self.records) / self.duration_s if self.duration_s > 0 else math.inf

    @property
    def mean_energy_j(self) -> float:
        return sum(r.energy_j for r in self.records) / len(self.records) if self.records else math.nan

    @property
    def mean_energy_by_device_j(self) -> dict[str, float]:
        total: Counter[str] = Counter()
        for r in self.records:
            total.update(r.energy_by_device_j)
        return {d: e / len(self.records) for d, e in sorted(total.items())}

    @property
    def deadline_misses(self) -> int:
        if self.deadline_s is None:
            return 0
        return sum(1 for r in self.records if r.latency_s is None or r.latency_s > self.deadline_s)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: summaries, plans, switches and the timeline (records in brief)."""
        t = self.timeline
        return {
            "version": 1, "label": self.label, "sent": self.sent, "completed": len(self.records),
            "lost": self.lost, "duplicated": self.duplicated, "duration_s": self.duration_s,
            "throughput_rps": self.throughput_rps, "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s, "latency_mean_s": self.latency_mean_s,
            "mean_energy_j": self.mean_energy_j, "mean_energy_by_device_j": self.mean_energy_by_device_j,
            "deadline_s": self.deadline_s, "deadline_misses": self.deadline_misses,
            "plans": [str(p) for p in self.plans],
            "switches": [vars(s) for s in self.switches],
            "probes": len(self.probes),
            "records": [{"request_id": r.request_id, "plan_version": r.plan_version, "sent_s": r.sent_s,
                         "latency_s": r.latency_s, "energy_j": r.energy_j} for r in self.records],
            "timeline": {"request_end_s": list(t.request_end_s), "request_latency_s": list(t.request_latency_s),
                         "request_version": list(t.request_version), "grid_s": list(t.grid_s),
                         "bandwidth_bits_per_s": {k: list(v) for k, v in t.bandwidth_bits_per_s.items()},
                         "version_at_grid": list(t.version_at_grid),
                         "first_position": {d: list(v) for d, v in t.first_position.items()}},
        }


def sent_bytes(record: RequestRecord, link: Link) -> int:
    """Bytes a request put on the wire of one directed link (probes are not requests)."""
    return record.bytes_sent(*link)


def collect(label: str, plans: Sequence[Plan], records: Sequence[RequestRecord], switches: Sequence[Switch],
            probes: Sequence[HopSample], *, sent: int, deadline_s: float | None, duration_s: float,
            conditions: Conditions, servers: tuple[str, ...]) -> SimResult:
    """The result of a run: lost and duplicated requests counted by id, and the timeline."""
    seen = Counter(r.request_id for r in records)
    lost = sum(1 for i in range(sent) if seen[i] == 0)
    duplicated = sum(n - 1 for n in seen.values() if n > 1)
    grid = tuple(float(x) for x in np.linspace(0.0, duration_s, TIMELINE_POINTS))
    bandwidth = {f"{s}->{t}": tuple(trace.bits_per_s_at(x) for x in grid)
                 for (s, t), trace in conditions.link_traces.items()}
    timeline = Timeline(
        request_end_s=tuple(r.sent_s + (r.latency_s or 0.0) for r in records),
        request_latency_s=tuple(r.latency_s if r.latency_s is not None else math.nan for r in records),
        request_version=tuple(r.plan_version for r in records),
        grid_s=grid, bandwidth_bits_per_s=bandwidth,
        version_at_grid=tuple(_version_at(switches, x) for x in grid),
        first_position={d: tuple(first_positions(p, servers)[d] for p in plans) for d in servers},
    )
    return SimResult(label, tuple(plans), tuple(records), tuple(switches), tuple(probes), sent, lost, duplicated,
                     deadline_s, duration_s, timeline)


def _version_at(switches: Sequence[Switch], t_s: float) -> int:
    version = 0
    for s in switches:
        if s.at_s <= t_s:
            version = s.to_version
    return version
