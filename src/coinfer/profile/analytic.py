"""Roofline prediction of node times from FLOPs and bytes, optionally calibrated on this machine.

For a node of op kind k on a device with peak rate P (FLOP/s) and memory bandwidth W (bytes/s):

    t = max(F / (P * e_k), B / W) + t_0

where F is the node's FLOPs, B = input + output + parameter bytes (each streamed through memory
once), e_k the fraction of peak that kind k reaches and t_0 a fixed per-node overhead (operator
dispatch, allocation, a kernel launch). This is the roofline of Williams, Waterman and Patterson
(CACM 2009) with a per-kind ceiling below the peak.

Without a calibration, `DEFAULT_EFFICIENCY` and `DEFAULT_NODE_OVERHEAD_S` are used: round figures
of our own (not from a paper) of what batch-1 inference kernels reach. `calibrate` replaces them by
values fitted on a profile measured on this machine (`coinfer.profile.measure`, which also records
the machine's GEMM peak, large-copy bandwidth and per-node overhead in the profile's settings).

Honest limits: efficiencies fitted on this CPU transfer to other CPUs (same kinds of kernels:
oneDNN/NNPACK-style convolutions, BLAS GEMMs) better than to GPUs, whose efficiencies depend on
occupancy and batch size in ways a CPU calibration does not see. Efficiencies are relative to the
GEMM-measured peak here, while catalogued peaks are datasheet figures that tuned GEMMs reach only
70-90% of, so predictions for catalogued devices lean optimistic. Small tensors live in cache, so
the DRAM bandwidth bound overestimates the time of small memory-bound nodes.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coinfer.errors import ProfileError
from coinfer.files.graph_file import graph_digest
from coinfer.graph import Graph
from coinfer.profile.catalog import DeviceSpec
from coinfer.profile.opkinds import OP_KINDS, NodeFeatures, node_features
from coinfer.profile.timings import Profile

# Fractions of peak FLOP/s per op kind, assumed (ours): dense convolutions and GEMMs reach about
# half of peak at batch 1, attention less (softmax and reshapes inside), reductions and
# elementwise work far less (they are memory-bound, so the bandwidth term usually decides).
DEFAULT_EFFICIENCY: Mapping[str, float] = {
    "conv": 0.5, "matmul": 0.5, "attention": 0.3, "norm": 0.1,
    "elementwise": 0.05, "pool": 0.1, "data": 1.0, "other": 0.1,
}
# Per-node overhead, assumed (ours): eager PyTorch dispatch costs ~5-20 us per operator on a CPU;
# a GPU kernel launch ~5 us.
DEFAULT_NODE_OVERHEAD_S: Mapping[str, float] = {"cpu": 10e-6, "gpu": 5e-6}
_MIN_EFFICIENCY = 1e-4  # clip floor: keeps a badly fitted kind finite


@dataclass(frozen=True)
class Calibration:
    """This machine's measured rates and the per-kind efficiencies fitted against them.

    `efficiency` maps op kinds to (0, 1]; kinds absent fall back to `DEFAULT_EFFICIENCY`.
    `fitted_on` names the graphs of the measured profiles. JSON-serialisable via `to_dict`.
    """

    peak_flops_per_s: float
    memory_bandwidth_bytes_per_s: float
    node_overhead_s: float
    efficiency: Mapping[str, float] = field(default_factory=dict)
    fitted_on: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "peak_flops_per_s": self.peak_flops_per_s,
                "memory_bandwidth_bytes_per_s": self.memory_bandwidth_bytes_per_s,
                "node_overhead_s": self.node_overhead_s, "efficiency": dict(self.efficiency),
                "fitted_on": list(self.fitted_on)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Calibration:
        try:
            return cls(float(doc["peak_flops_per_s"]), float(doc["memory_bandwidth_bytes_per_s"]),
                       float(doc["node_overhead_s"]),
                       {str(k): float(v) for k, v in doc.get("efficiency", {}).items()},
                       tuple(doc.get("fitted_on", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"calibration document is malformed ({exc!r}); re-run the calibration") \
                from None


def local_spec(calibration: Calibration) -> DeviceSpec:
    """A DeviceSpec for this machine from its measured rates (predict with it to check the fit)."""
    return DeviceSpec("local", "this machine (measured GEMM peak and copy bandwidth)", "cpu",
                      calibration.peak_flops_per_s, calibration.memory_bandwidth_bytes_per_s,
                      float("inf"), 0.0, ("measured by coinfer.profile.measure.measure_machine",))


def node_time_s(f: NodeFeatures, peak_flops_per_s: float, bandwidth_bytes_per_s: float,
                efficiency: float, overhead_s: float) -> float:
    """The roofline time of one node (the module docstring's equation)."""
    compute_s = f.flops / (peak_flops_per_s * efficiency) if f.flops > 0 else 0.0
    return max(compute_s, f.bytes_moved / bandwidth_bytes_per_s) + overhead_s


def predict(graph: Graph, spec: DeviceSpec, calibration: Calibration | None = None) -> Profile:
    """Roofline times of every node of `graph` on the catalogued device `spec`."""
    efficiency = {**DEFAULT_EFFICIENCY, **(calibration.efficiency if calibration else {})}
    overhead_s = calibration.node_overhead_s if calibration else DEFAULT_NODE_OVERHEAD_S[spec.kind]
    times = {
        f.node_id: node_time_s(f, spec.peak_flops_per_s, spec.memory_bandwidth_bytes_per_s,
                               efficiency[f.kind], overhead_s)
        for f in node_features(graph)
    }
    settings: dict[str, object] = {
        "catalog": spec.name, "peak_flops_per_s": spec.peak_flops_per_s,
        "memory_bandwidth_bytes_per_s": spec.memory_bandwidth_bytes_per_s,
        "node_overhead_s": overhead_s, "efficiency": efficiency,
        "calibrated_on": list(calibration.fitted_on) if calibration else None,
        "calibrated": calibration is not None,
    }
    return Profile(graph.name, graph_digest(graph), f"analytic:{spec.name}", "analytic", times, {}, settings)


def calibrate(measured: Profile, graph: Graph, *, peak_flops_per_s: float | None = None,
              memory_bandwidth_bytes_per_s: float | None = None,
              node_overhead_s: float | None = None) -> Calibration:
    """Fit per-kind efficiencies on one measured profile of `graph` (see `calibrate_on`)."""
    return calibrate_on([(graph, measured)], peak_flops_per_s=peak_flops_per_s,
                        memory_bandwidth_bytes_per_s=memory_bandwidth_bytes_per_s,
                        node_overhead_s=node_overhead_s)


def calibrate_on(pairs: Iterable[tuple[Graph, Profile]], *, peak_flops_per_s: float | None = None,
                 memory_bandwidth_bytes_per_s: float | None = None,
                 node_overhead_s: float | None = None) -> Calibration:
    """Fit per-kind efficiencies on measured profiles of several graphs.

    The machine's rates default to those `measure` recorded in the first profile's settings. For
    each node whose measured time above the overhead exceeds its bandwidth bound (so the compute
    term decides it), the efficiency that would reproduce it is (F / P) / (t - t_0); a kind's
    efficiency is the median of those, clipped to (0, 1]. Kinds with no such node keep the default.
    """
    pairs = list(pairs)
    if not pairs:
        raise ProfileError("calibration needs at least one measured profile")
    first = pairs[0][1]
    peak = _rate(peak_flops_per_s, first, "peak_flops_per_s")
    bandwidth = _rate(memory_bandwidth_bytes_per_s, first, "memory_bandwidth_bytes_per_s")
    overhead = _rate(node_overhead_s, first, "node_overhead_s")
    ratios: dict[str, list[float]] = {k: [] for k in OP_KINDS}
    for graph, measured in pairs:
        _check_fits(measured, graph)
        for f in node_features(graph):
            busy_s = measured.node_time_s[f.node_id] - overhead
            if f.flops > 0 and busy_s > 0 and f.bytes_moved / bandwidth < busy_s:
                ratios[f.kind].append((f.flops / peak) / busy_s)
    efficiency = {k: min(1.0, max(_MIN_EFFICIENCY, statistics.median(v))) for k, v in ratios.items() if v}
    return Calibration(peak, bandwidth, overhead, efficiency, tuple(g.name for g, _ in pairs))


def _rate(given: float | None, measured: Profile, key: str) -> float:
    if given is not None:
        return given
    value = measured.settings.get(key)
    if not isinstance(value, int | float):
        raise ProfileError(
            f"profile {measured.graph_name} on {measured.device} does not record {key!r}; measure it with "
            f"coinfer.profile.measure (which records the machine's rates) or pass {key}= explicitly"
        )
    return float(value)


def _check_fits(measured: Profile, graph: Graph) -> None:
    if measured.graph_digest != graph_digest(graph):
        raise ProfileError(
            f"the profile of {measured.graph_name} (digest {measured.graph_digest}) was not measured on "
            f"graph {graph.name} (digest {graph_digest(graph)}); re-profile this graph"
        )
    if measured.method != "measured":
        raise ProfileError(f"calibration needs a measured profile; {measured.graph_name} is "
                           f"{measured.method}")
