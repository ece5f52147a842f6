"""Sustained speeds: published latencies with their sources, the fit, and the catalog's predictions with it."""

from __future__ import annotations

import json
import random
import statistics

import pytest
from profile_helpers import chain

from coinfer.cli import main
from coinfer.errors import ClusterFileError
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.graph import Graph
from coinfer.profile.catalog import CATALOG, device_spec
from coinfer.profile.resolve import resolve_times
from coinfer.profile.sustained import (
    BOUNDS,
    SustainedFit,
    fit_sustained,
    fits,
    predict_sustained,
    published,
    sustained_fit,
)

TORCHVISION_MODELS = {"mobilenet_v2", "mobilenet_v3_large", "resnet18", "resnet50", "efficientnet_b0", "vgg13",
                      "googlenet", "shufflenet_v2_x1_0"}


def _random_graphs(count: int) -> list[Graph]:
    rng = random.Random(3)
    ops = ["aten.conv2d", "aten.relu", "aten.linear", "aten.max_pool2d", "aten.add", "aten.batch_norm"]
    # a third of the nodes do almost no arithmetic, so that the bandwidth decides them
    return [chain(f"g{i}", [(rng.choice(ops), rng.choice([rng.uniform(0, 1e5), rng.uniform(1e6, 5e8),
                                                          rng.uniform(1e6, 5e8)]),
                              rng.randint(1_000, 4_000_000), rng.randint(0, 2_000_000))
                             for _ in range(rng.randint(20, 60))]) for i in range(count)]


def test_every_published_latency_names_its_source_and_a_catalogued_device() -> None:
    entries = published()
    assert len(entries) >= 30
    for e in entries:
        assert e.device in CATALOG and e.model in TORCHVISION_MODELS and e.framework in ("pytorch", "onnxruntime")
        assert 0.001 < e.latency_s < 10 and "commit" in e.source_text  # a source that can be looked up


def test_the_fit_recovers_the_parameters_that_made_the_latencies() -> None:
    spec = device_spec("rpi4b")
    truth = SustainedFit("rpi4b", "pytorch", 0.7, 0.5, 0.3, 4e-5)  # the chains have no grouped convolution
    graphs = _random_graphs(6)
    latencies = [(g, predict_sustained(g, spec, truth).total_time_s) for g in graphs]
    fit = fit_sustained(spec, "pytorch", latencies)
    for g, latency in latencies:
        assert predict_sustained(g, spec, fit).total_time_s == pytest.approx(latency, rel=1e-3)
    assert (fit.compute_scale, fit.bandwidth_fraction) == (pytest.approx(0.7, rel=0.05), pytest.approx(0.3, rel=0.05))
    assert fit.depthwise_scale == fit.compute_scale  # no grouped convolution to tell it by
    low, high = BOUNDS
    assert all(lo <= v <= hi for lo, v, hi in zip(low, fit.parameters, high, strict=True))


def test_grouped_convolutions_are_told_apart_and_priced_by_their_own_scale() -> None:
    from coinfer.capture import capture
    from coinfer.profile.opkinds import is_grouped_conv

    mobilenet, resnet = capture("torchvision:mobilenet_v2"), capture("torchvision:resnet18")
    assert sum(is_grouped_conv(mobilenet, n) for n in mobilenet.nodes) == 17  # its 17 depthwise convolutions
    assert not any(is_grouped_conv(resnet, n) for n in resnet.nodes)
    spec = device_spec("rpi5")
    slow_depthwise = SustainedFit("rpi5", "pytorch", 0.5, 0.01, 1.0, 0.0)
    even = SustainedFit("rpi5", "pytorch", 0.5, 0.5, 1.0, 0.0)
    def total(graph: Graph, fit: SustainedFit) -> float:
        return predict_sustained(graph, spec, fit).total_time_s

    assert total(resnet, slow_depthwise) == total(resnet, even)
    assert total(mobilenet, slow_depthwise) > 3 * total(mobilenet, even)


def test_the_shipped_fits_predict_their_published_models_within_25_percent() -> None:
    from coinfer.capture import capture

    rows = [e for e in published() if e.device == "rpi5" and e.framework == "pytorch" and e.fit]
    fit = sustained_fit("rpi5", "pytorch")
    assert fit is not None and set(fit.fitted_on) == {e.model for e in rows}
    ratios = [predict_sustained(capture(f"torchvision:{e.model}"), device_spec("rpi5"), fit).total_time_s / e.latency_s
              for e in rows]
    assert statistics.median(abs(r - 1) for r in ratios) < 0.25
    assert all(0.5 < r < 2 for r in ratios)


def test_every_fit_is_of_a_catalogued_device_with_published_figures() -> None:
    fitted = {(e.device, e.framework) for e in published() if e.fit}
    assert set(fits()) == fitted
    assert sustained_fit("jetson-nano", "pytorch") is None  # nothing published: peak-only


def test_a_cluster_device_with_a_framework_is_predicted_by_what_it_sustains() -> None:
    graph = chain("toy", [("aten.conv2d", 2e8, 400_000, 10_000), ("aten.relu", 0, 400_000, 0)])
    cluster = cluster_from_dict({"devices": {
        "pi": {"device": "rpi5", "framework": "pytorch", "origin": True},
        "pi-peak": {"device": "rpi5"},
        "nano": {"device": "jetson-nano", "framework": "pytorch"}}}, "c.yaml")
    times, sources = resolve_times(graph, cluster)
    assert sources["pi"].startswith("sustained:rpi5 (pytorch, fitted on 5 published models")
    assert "peak-only, uncalibrated" in sources["nano"] and "peak-only, uncalibrated" in sources["pi-peak"]
    assert sum(times["pi"].values()) > 2 * sum(times["pi-peak"].values())  # eager PyTorch is far from the peak
    with pytest.raises(ClusterFileError, match="'framework' predicts a catalogued 'device'"):
        cluster_from_dict({"devices": {"x": {"flops_per_s": 1e9, "framework": "pytorch", "origin": True}}}, "c.yaml")


def test_the_command_line_shows_the_fits_and_says_uncalibrated(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert main(["devices", "--json"]) == 0
    by_name = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(by_name["rpi4b"]["sustained"]) == {"pytorch", "onnxruntime"} and by_name["v100"]["sustained"] == {}
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"version": 1, "name": "toy", "input_bytes": 1e3, "nodes": [
        {"id": "a", "inputs": ["input"], "flops": 1e9, "output_bytes": 1e3, "op": "aten.conv2d"}]}))
    cache = ["--cache-dir", str(tmp_path / "cache")]  # no calibration of this machine there
    assert main(["profile", str(graph), "--device", "analytic:jetson-nano", *cache]) == 0
    assert "uncalibrated" in capsys.readouterr().out
    assert main(["profile", str(graph), "--device", "analytic:rpi5", "--framework", "pytorch", "--json", *cache]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["calibrated"] and doc["settings"]["sustained"]["framework"] == "pytorch"
    assert main(["profile", str(graph), "--framework", "pytorch", *cache]) == 2
    assert "use it with --device analytic:NAME" in capsys.readouterr().err
