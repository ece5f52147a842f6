"""What a catalogued device sustains, per framework: the roofline fitted to published whole-model latencies.

The catalog's peaks are datasheet figures; a framework reaches a fraction of them that depends on
the board, its memory and the framework's kernels (measured: PyTorch eager runs MobileNetV2 3.7x
slower than ONNX Runtime on a Raspberry Pi 4; published.yaml). A sustained fit keeps the roofline
of coinfer.profile.analytic and fits four numbers per (device, framework):

    t = max(F / (P * e_k * a_k), B / (W * b)) + t_0

- the compute scale a_k: every kind's efficiency e_k (analytic.DEFAULT_EFFICIENCY) times `a`,
  except grouped and depthwise convolutions (opkinds.is_grouped_conv), whose efficiency is e_conv
  times `g`: frameworks run them at a small fraction of dense convolutions' speed, and a
  MobileNet's time is mostly theirs;
- `b`, the fraction of the datasheet DRAM bandwidth W that the framework's memory-bound kernels get;
- `t_0`, the per-node overhead (dispatch, allocation, threads waking).

They minimise the squared log ratio of predicted to published latency over the device's published
models (scipy.optimize.least_squares, bounded), so that a 2x error counts the same on a 30 ms and
on a 1.7 s model. `published.yaml` holds the figures with their sources; `sustained.yaml` holds the
fits, written by `benchmarks/device_fidelity.py --write`, which also prints how well they predict
each model (in the fit, and held out). A device with no published figure for a framework has no
fit of its own. Where the catalog names a device with the same cores and software stack
(`sustained_like` in devices.yaml: a Xeon of the same Broadwell generation as a fitted laptop CPU,
a phone's Cortex-A77 cores beside a Pi 5's A76), it takes that device's fit: the fractions of peak
carry over, the peaks stay its own (docs/profiles.md measures how well such transfers predict
between devices that do have figures). Otherwise its predictions are peak-only. Either way every
output that uses them says "uncalibrated".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

from coinfer.errors import UserInputError
from coinfer.files.graph_file import graph_digest
from coinfer.graph import Graph
from coinfer.profile.analytic import DEFAULT_EFFICIENCY, DEFAULT_NODE_OVERHEAD_S
from coinfer.profile.catalog import DeviceSpec, device_spec
from coinfer.profile.opkinds import is_grouped_conv, node_features
from coinfer.profile.timings import Profile

FRAMEWORKS = ("pytorch", "onnxruntime")
# Bounds of the fit (a, g, b, t_0): a compute scale below 1/1000 would be a broken figure, not a
# slow framework; above 2 a convolution (default efficiency 0.5) would beat the peak. The bandwidth
# has a floor of a quarter of the datasheet's (an assumption: a memory-bound kernel that streams gets
# at least that); without it five whole-model figures let the fit trade a dense-kernel speed above
# any measured one against a memory 25x slower than the board's (the Pi 4's PyTorch fit did), and a
# fit that wrong in its parts predicts other models and other devices badly (docs/profiles.md)
_TOP_SCALE = 1.0 / max(DEFAULT_EFFICIENCY[k] for k in ("conv", "matmul"))
BOUNDS = ((1e-3, 1e-3, 0.25, 0.0), (_TOP_SCALE, _TOP_SCALE, 1.0, 2e-3))


@dataclass(frozen=True)
class PublishedLatency:
    """One published whole-model latency of a catalogued device (published.yaml)."""

    device: str
    model: str  # a torchvision model name
    framework: str
    latency_s: float
    threads: str
    source: str  # the source's key in published.yaml
    source_text: str
    fit: bool  # the sustained fit is made on it (else it is only compared with)


@dataclass(frozen=True)
class SustainedFit:
    """The sustained roofline of one device under one framework (see the module docstring)."""

    device: str
    framework: str
    compute_scale: float
    depthwise_scale: float
    bandwidth_fraction: float
    node_overhead_s: float
    fitted_on: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default_factory=tuple)
    transferred_from: str | None = None  # the fit is this device's (catalog `sustained_like`), not `device`'s
    transfer_why: str = ""
    threads: str = "default"  # the thread count of the published figures ("default": every core)

    @property
    def calibrated(self) -> bool:
        """Fitted to published latencies of this very device."""
        return self.transferred_from is None

    @property
    def parameters(self) -> tuple[float, float, float, float]:
        return self.compute_scale, self.depthwise_scale, self.bandwidth_fraction, self.node_overhead_s

    def efficiency_by_class(self) -> dict[str, float]:
        """The fraction of the datasheet peak each op class sustains, and of its DRAM bandwidth the
        memory-bound ones (element-wise, pooling, normalisation) reach. Matmul/linear and attention
        follow the compute scale: the published models, CNNs, do not tell them apart from convolutions."""
        return {"dense_conv": DEFAULT_EFFICIENCY["conv"] * self.compute_scale,
                "depthwise_conv": DEFAULT_EFFICIENCY["conv"] * self.depthwise_scale,
                "matmul": DEFAULT_EFFICIENCY["matmul"] * self.compute_scale,
                "attention": DEFAULT_EFFICIENCY["attention"] * self.compute_scale,
                "memory_bound_bandwidth": self.bandwidth_fraction}

    def to_dict(self) -> dict[str, Any]:
        doc = {"compute_scale": self.compute_scale, "depthwise_scale": self.depthwise_scale,
               "bandwidth_fraction": self.bandwidth_fraction, "node_overhead_s": self.node_overhead_s,
               "threads": self.threads, "fitted_on": list(self.fitted_on), "sources": list(self.sources)}
        if self.transferred_from is not None:
            doc |= {"transferred_from": self.transferred_from, "transfer_why": self.transfer_why}
        return doc

    def describe(self) -> str:
        """Where the fit comes from, for the time source of a plan."""
        if self.transferred_from is None:
            return f"{self.framework}, fitted on {len(self.fitted_on)} published models"
        return (f"{self.framework}, uncalibrated: nothing published for it, {self.transferred_from}'s fit "
                f"transferred ({self.transfer_why})")


@cache
def published() -> tuple[PublishedLatency, ...]:
    doc = yaml.safe_load(resources.files("coinfer.profile").joinpath("published.yaml").read_text())
    sources: Mapping[str, Any] = doc["sources"]
    return tuple(PublishedLatency(device_spec(device).name, e["model"], e["framework"], e["latency_ms"] / 1e3,
                                  str(e["threads"]), e["source"], " ".join(sources[e["source"]]["text"].split()),
                                  sources[e["source"]]["use"] == "fit")
                 for device, entries in doc["latencies"].items() for e in entries)


@cache
def fits() -> Mapping[tuple[str, str], SustainedFit]:
    """Every fit of sustained.yaml, by (device, framework)."""
    doc = yaml.safe_load(resources.files("coinfer.profile").joinpath("sustained.yaml").read_text()) or {}
    return {(device, fw): SustainedFit(device, fw, float(f["compute_scale"]), float(f["depthwise_scale"]),
                                       float(f["bandwidth_fraction"]), float(f["node_overhead_s"]),
                                       tuple(f.get("fitted_on", ())), tuple(f.get("sources", ())),
                                       threads=str(f.get("threads", "default")))
            for device, by_framework in (doc.get("devices") or {}).items() for fw, f in by_framework.items()}


def sustained_fit(device: str, framework: str = "pytorch") -> SustainedFit | None:
    """The fit of a catalogued device under `framework`, its `sustained_like` device's, or None (peak-only)."""
    if framework not in FRAMEWORKS:
        raise UserInputError(f"framework {framework!r}: use one of {', '.join(FRAMEWORKS)}")
    spec = device_spec(device)
    own = fits().get((spec.name, framework))
    if own is not None or spec.sustained_like is None:
        return own
    donor = fits().get((spec.sustained_like, framework))
    return None if donor is None else replace(donor, device=spec.name, transferred_from=donor.device,
                                              transfer_why=spec.sustained_like_why)


def predict_sustained(graph: Graph, spec: DeviceSpec, fit: SustainedFit | None) -> Profile:
    """Node times of `graph` on `spec` under the fit; peak-only (marked uncalibrated) without one."""
    parameters = fit.parameters if fit else (1.0, 1.0, 1.0, DEFAULT_NODE_OVERHEAD_S[spec.kind])
    times = dict(zip((n.id for n in graph.nodes), _Features(graph).times(spec, *parameters).tolist(), strict=True))
    settings: dict[str, object] = {
        "catalog": spec.name, "peak_flops_per_s": spec.peak_flops_per_s,
        "memory_bandwidth_bytes_per_s": spec.memory_bandwidth_bytes_per_s,
        "sustained": fit.to_dict() | {"framework": fit.framework} if fit else None,
        "calibrated": fit is not None and fit.calibrated}
    return Profile(graph.name, graph_digest(graph), f"analytic:{spec.name}", "analytic", times, {}, settings)


class _Features:
    """A graph's nodes as arrays: FLOPs, bytes moved, default efficiency, grouped or not."""

    def __init__(self, graph: Graph) -> None:
        features = node_features(graph)
        self.flops = np.array([f.flops for f in features])
        self.moved = np.array([f.bytes_moved for f in features], dtype=float)
        self.efficiency = np.array([DEFAULT_EFFICIENCY[f.kind] for f in features])
        self.grouped = np.array([is_grouped_conv(graph, n) for n in graph.nodes], dtype=bool)

    def times(self, spec: DeviceSpec, a: float, g: float, b: float, t0: float) -> np.ndarray:
        scale = np.where(self.grouped, g, a)
        compute = np.divide(self.flops, spec.peak_flops_per_s * self.efficiency * scale,
                            out=np.zeros_like(self.flops), where=self.flops > 0)
        return np.asarray(np.maximum(compute, self.moved / (spec.memory_bandwidth_bytes_per_s * b)) + t0)


def fit_sustained(spec: DeviceSpec, framework: str, measured: Sequence[tuple[Graph, float]],
                  sources: Sequence[str] = (), threads: str = "default") -> SustainedFit:
    """The (a, g, b, t_0) that fit the published latencies `measured` (graph, seconds) best."""
    from scipy.optimize import least_squares

    if not measured:
        raise UserInputError(f"no published latency of {spec.name} under {framework} to fit on")
    features = [(_Features(g), latency) for g, latency in measured]
    # without a grouped convolution in the data g cannot be told, and is taken equal to a
    grouped = any(f.grouped.any() for f, _ in features)

    def parameters(x: np.ndarray) -> tuple[float, float, float, float]:
        return (x[0], x[1], x[2], x[3]) if grouped else (x[0], x[0], x[1], x[2])

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.array([math.log(float(f.times(spec, *parameters(x)).sum()) / latency) for f, latency in features])

    keep = [0, 1, 2, 3] if grouped else [0, 2, 3]
    start = np.array([0.5, 0.5, 0.5, DEFAULT_NODE_OVERHEAD_S[spec.kind]])[keep]
    bounds = (np.array(BOUNDS[0])[keep], np.array(BOUNDS[1])[keep])
    result = least_squares(residuals, start, bounds=bounds, x_scale=np.array([0.1, 0.1, 0.1, 1e-5])[keep])
    a, g, b, t0 = (float(v) for v in parameters(result.x))
    return SustainedFit(spec.name, framework, a, g, b, t0, tuple(dict.fromkeys(gr.name for gr, _ in measured)),
                        tuple(dict.fromkeys(sources)), threads=threads)
