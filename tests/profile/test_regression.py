"""The Neurosurgeon-style regression: recovers known coefficients, predicts unseen graphs."""

from __future__ import annotations

import json
import random

import pytest
from profile_helpers import chain, measured

from coinfer.errors import ProfileError
from coinfer.graph import Graph
from coinfer.profile import regression
from coinfer.profile.opkinds import node_features
from coinfer.profile.timings import Profile

# seconds per FLOP, per input byte, per output byte, per parameter byte, and a constant
CONV = (2e-11, 1e-10, 3e-10, 5e-11, 2e-5)
RELU = (0.0, 4e-10, 4e-10, 0.0, 5e-6)


def _random_graph(name: str, rng: random.Random, n: int) -> Graph:
    specs = []
    for _ in range(n):
        if rng.random() < 0.5:
            out_bytes, param_bytes = rng.randrange(10**4, 10**7), rng.randrange(10**3, 10**6)
            specs.append(("aten.conv2d", rng.uniform(1e6, 1e9), out_bytes, param_bytes))
        else:
            specs.append(("aten.relu", rng.uniform(1e3, 1e6), rng.randrange(10**4, 10**7), 0))
    return chain(name, specs, input_bytes=rng.randrange(10**4, 10**6))


def _true_times(graph: Graph) -> dict[str, float]:
    coef = {"conv": CONV, "elementwise": RELU}
    return {f.node_id: sum(c * x for c, x in zip(coef[f.kind], regression.feature_row(f), strict=True))
            for f in node_features(graph)}


def _pairs(seed: int, graphs: int = 3) -> list[tuple[Graph, Profile]]:
    rng = random.Random(seed)
    out = []
    for k in range(graphs):
        g = _random_graph(f"g{k}", rng, 30)
        out.append((g, measured(g, _true_times(g))))
    return out


def test_fit_recovers_known_coefficients() -> None:
    model = regression.fit(_pairs(seed=1))
    for kind, truth in (("conv", CONV), ("elementwise", RELU)):
        got = model.coefficients[kind]
        for c, t in zip(got, truth, strict=True):
            assert c == pytest.approx(t, rel=1e-4, abs=1e-15)


def test_predicts_a_graph_it_was_not_fitted_on() -> None:
    model = regression.fit(_pairs(seed=2))
    unseen = _random_graph("unseen", random.Random(99), 20)
    profile = regression.predict(model, unseen, "phone")
    assert profile.method == "regression" and profile.device == "phone"
    for node_id, t in _true_times(unseen).items():
        assert profile.node_time_s[node_id] == pytest.approx(t, rel=1e-4)


def test_unseen_kind_falls_back_to_the_pooled_model() -> None:
    model = regression.fit(_pairs(seed=3))
    graph = chain("pool", [("aten.max_pool2d", 1e6, 10**5, 0)])
    time_s = regression.predict(model, graph, "local").node_time_s["n0"]
    assert "pool" not in model.coefficients
    row = regression.feature_row(node_features(graph)[0])
    expected = sum(c * x for c, x in zip(model.pooled, row, strict=True))
    assert time_s == pytest.approx(expected) and time_s > 0


def test_model_round_trips_through_json() -> None:
    model = regression.fit(_pairs(seed=4))
    assert regression.RegressionModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model


def test_fit_rejects_profiles_of_several_devices() -> None:
    (g1, p1), (g2, p2) = _pairs(seed=5, graphs=2)
    p2 = Profile(p2.graph_name, p2.graph_digest, "phone", "measured", p2.node_time_s)
    with pytest.raises(ProfileError, match="one model per device"):
        regression.fit([(g1, p1), (g2, p2)])
