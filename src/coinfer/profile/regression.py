"""Per-op-kind regression of node time on node features (Neurosurgeon, Kang et al. ASPLOS 2017).

Neurosurgeon predicts a layer's latency on a device from a regression per layer type on features
such as input size, filter size and number of filters, so a new model needs no profiling on that
device. Ours: for each op kind (`coinfer.profile.opkinds`) a linear model

    t = c_flops * F + c_in * B_in + c_out * B_out + c_param * B_param + c_0

with non-negative coefficients (scipy.optimize.nnls: more work never predicts less time, and an
extrapolation cannot go negative). The residuals are relative, (prediction - t) / t, so the many
small nodes count as much as the few large ones; that is our choice, the paper does not say how it
weighted. Kinds with fewer than `MIN_SAMPLES` measured nodes use a model pooled over all kinds.

A model is fitted on measured profiles of one device and predicts times on that device only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from coinfer.errors import ProfileError
from coinfer.files.graph_file import graph_digest
from coinfer.graph import Graph
from coinfer.profile.opkinds import NodeFeatures, node_features
from coinfer.profile.timings import Profile

FEATURES = ("flops", "input_bytes", "output_bytes", "param_bytes", "intercept")
MIN_SAMPLES = 8  # below this a kind's five coefficients are poorly determined: use the pooled model
POOLED = "*"


@dataclass(frozen=True)
class RegressionModel:
    """Coefficients (seconds per unit of each of `FEATURES`) per op kind and pooled over kinds."""

    coefficients: Mapping[str, tuple[float, ...]]
    pooled: tuple[float, ...]
    device: str
    fitted_on: tuple[str, ...] = ()
    samples: Mapping[str, int] = field(default_factory=dict)

    def coefficients_for(self, kind: str) -> tuple[float, ...]:
        return self.coefficients.get(kind, self.pooled)

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "features": list(FEATURES), "device": self.device,
                "fitted_on": list(self.fitted_on), "samples": dict(self.samples),
                "pooled": list(self.pooled),
                "coefficients": {k: list(v) for k, v in self.coefficients.items()}}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RegressionModel:
        if doc.get("features") != list(FEATURES):
            raise ProfileError(f"regression model features {doc.get('features')} are not {list(FEATURES)}; "
                               "refit the model with this coinfer")
        return cls({k: tuple(float(x) for x in v) for k, v in doc["coefficients"].items()},
                   tuple(float(x) for x in doc["pooled"]), str(doc["device"]),
                   tuple(doc.get("fitted_on", ())), dict(doc.get("samples", {})))


def feature_row(f: NodeFeatures) -> list[float]:
    return [f.flops, float(f.input_bytes), float(f.output_bytes), float(f.param_bytes), 1.0]


def fit(pairs: Sequence[tuple[Graph, Profile]]) -> RegressionModel:
    """Fit one model per op kind (and a pooled one) on measured profiles of one device."""
    if not pairs:
        raise ProfileError("fitting a regression needs at least one (graph, measured profile) pair")
    devices = {p.device for _, p in pairs}
    if len(devices) > 1:
        raise ProfileError(f"the profiles come from several devices {sorted(devices)}; "
                           "fit one model per device")
    rows: dict[str, list[list[float]]] = {}
    targets: dict[str, list[float]] = {}
    for graph, profile in pairs:
        if profile.graph_digest != graph_digest(graph):
            raise ProfileError(f"the profile of {profile.graph_name} does not belong to graph {graph.name} "
                               "(digests differ); re-profile the graph")
        for f in node_features(graph):
            t = profile.node_time_s[f.node_id]
            if t > 0:
                rows.setdefault(f.kind, []).append(feature_row(f))
                targets.setdefault(f.kind, []).append(t)
    all_rows = [r for v in rows.values() for r in v]
    all_targets = [t for v in targets.values() for t in v]
    coefficients = {k: _nnls_relative(rows[k], targets[k]) for k in rows if len(rows[k]) >= MIN_SAMPLES}
    samples = {k: len(v) for k, v in rows.items()} | {POOLED: len(all_rows)}
    return RegressionModel(coefficients, _nnls_relative(all_rows, all_targets), devices.pop(),
                           tuple(g.name for g, _ in pairs), samples)


def _nnls_relative(rows: list[list[float]], targets: list[float]) -> tuple[float, ...]:
    """argmin_c>=0 sum(((x c - t) / t)^2), with columns scaled to unit maximum for conditioning."""
    t = np.asarray(targets)
    a = np.asarray(rows) / t[:, None]
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    solution, _ = nnls(a / scale, np.ones_like(t))
    return tuple(float(c) for c in solution / scale)


def predict(model: RegressionModel, graph: Graph, device_name: str) -> Profile:
    """Predicted time of every node of `graph` on the device the model was fitted on."""
    times = {f.node_id: float(np.dot(feature_row(f), model.coefficients_for(f.kind)))
             for f in node_features(graph)}
    settings: dict[str, object] = {"fitted_device": model.device, "fitted_on": list(model.fitted_on),
                                   "kinds_fitted": sorted(model.coefficients)}
    return Profile(graph.name, graph_digest(graph), device_name, "regression", times, {}, settings)
