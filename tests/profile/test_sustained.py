"""Sustained speeds: published latencies with their sources, the fit, and the catalog's predictions with it."""

from __future__ import annotations

import json
import math
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

TORCHVISION_MODELS = {"mobilenet_v2", "mobilenet_v3_large", "resnet18", "resnet34", "resnet50", "resnet101",
                      "resnet152", "efficientnet_b0", "vgg13", "googlenet", "shufflenet_v2_x1_0"}


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
    assert all(f.calibrated and f.transferred_from is None for f in fits().values())


def test_a_device_without_figures_takes_the_fit_the_catalog_names_and_stays_uncalibrated() -> None:
    nano = sustained_fit("jetson-nano", "pytorch")
    donor = sustained_fit("jetson-xavier-nx", "pytorch")
    assert nano is not None and donor is not None and donor.calibrated
    assert not nano.calibrated and nano.transferred_from == "jetson-xavier-nx" and nano.device == "jetson-nano"
    assert nano.parameters == donor.parameters and "uncalibrated" in nano.describe()
    assert sustained_fit("jetson-nano", "onnxruntime") is None  # nothing to transfer: peak-only
    graph = chain("toy", [("aten.conv2d", 2e9, 400_000, 10_000)])
    profile = predict_sustained(graph, device_spec("jetson-nano"), nano)
    # the fractions carry over, the peaks stay the device's own: the Nano is predicted slower
    assert profile.total_time_s > predict_sustained(graph, device_spec("jetson-xavier-nx"), donor).total_time_s
    assert profile.settings["calibrated"] is False
    for spec in CATALOG.values():
        if spec.sustained_like is not None:
            assert spec.sustained_like in CATALOG and spec.sustained_like_why and spec.sustained_like != spec.name


def test_a_cluster_device_with_a_framework_is_predicted_by_what_it_sustains() -> None:
    graph = chain("toy", [("aten.conv2d", 2e8, 400_000, 10_000), ("aten.relu", 0, 400_000, 0)])
    cluster = cluster_from_dict({"devices": {
        "pi": {"device": "rpi5", "origin": True},  # pytorch unless the file says otherwise
        "pi-ort": {"device": "rpi5", "framework": "onnxruntime"},
        "pi-peak": {"device": "rpi5", "framework": "peak"},
        "nano": {"device": "jetson-nano"},
        "nano-ort": {"device": "jetson-nano", "framework": "onnxruntime"}}}, "c.yaml")
    assert cluster.device("pi").framework == "pytorch"
    times, sources = resolve_times(graph, cluster)
    assert sources["pi"].startswith("sustained:rpi5 (pytorch, fitted on 5 published models")
    assert sources["pi-ort"].startswith("sustained:rpi5 (onnxruntime, fitted on 5 published models")
    assert "uncalibrated" in sources["nano"] and "jetson-xavier-nx's fit transferred" in sources["nano"]
    assert "peak-only, uncalibrated" in sources["nano-ort"] and "peak-only, uncalibrated" in sources["pi-peak"]
    assert sum(times["pi"].values()) > 2 * sum(times["pi-peak"].values())  # eager PyTorch is far from the peak
    assert sum(times["pi"].values()) > sum(times["pi-ort"].values())  # and slower than ONNX Runtime there
    with pytest.raises(ClusterFileError, match="'framework' predicts a catalogued 'device'"):
        cluster_from_dict({"devices": {"x": {"flops_per_s": 1e9, "framework": "pytorch", "origin": True}}}, "c.yaml")


def test_the_command_line_shows_the_fits_and_says_uncalibrated(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert main(["devices", "--json"]) == 0
    by_name = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(by_name["rpi4b"]["sustained"]) == {"pytorch", "onnxruntime"}
    assert set(by_name["jetson-nano"]["sustained"]) == {"pytorch"}
    assert by_name["jetson-nano"]["sustained"]["pytorch"]["transferred_from"] == "jetson-xavier-nx"
    rpi5 = by_name["rpi5"]["sustained"]["pytorch"]
    assert rpi5["threads"] == "default"
    classes = rpi5["efficiency_by_class"]
    assert set(classes) == {"dense_conv", "depthwise_conv", "matmul", "attention", "memory_bound_bandwidth"}
    assert 0 < classes["depthwise_conv"] < classes["dense_conv"] <= 1  # eager depthwise kernels are the slow ones
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"version": 1, "name": "toy", "input_bytes": 1e3, "nodes": [
        {"id": "a", "inputs": ["input"], "flops": 1e9, "output_bytes": 1e3, "op": "aten.conv2d"}]}))
    cache = ["--cache-dir", str(tmp_path / "cache")]  # no calibration of this machine there
    assert main(["profile", str(graph), "--device", "analytic:jetson-nano", *cache]) == 0
    assert "uncalibrated: nothing published for this device, jetson-xavier-nx's fit" in capsys.readouterr().out
    assert main(["profile", str(graph), "--device", "analytic:rpi5", "--framework", "peak", *cache]) == 0
    assert "uncalibrated: datasheet peaks only" in capsys.readouterr().out
    assert main(["profile", str(graph), "--device", "analytic:rpi5", "--framework", "pytorch", "--json", *cache]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["calibrated"] and doc["settings"]["sustained"]["framework"] == "pytorch"
    assert main(["profile", str(graph), "--framework", "pytorch", *cache]) == 2
    assert "use it with --device analytic:NAME" in capsys.readouterr().err


def test_without_a_fit_a_calibration_of_this_machine_sets_the_efficiencies_and_the_source_says_so() -> None:
    from coinfer.profile.analytic import Calibration, predict

    graph = chain("toy", [("aten.conv2d", 2e8, 400_000, 10_000), ("aten.relu", 0, 400_000, 0)])
    calibration = Calibration(1e11, 1e10, 1e-5, {"conv": 0.05, "elementwise": 0.2}, ("resnet18",))
    cluster = cluster_from_dict({"devices": {
        "pi": {"device": "rpi5", "origin": True},
        "nano": {"device": "jetson-nano", "framework": "onnxruntime"},
        "peak": {"device": "rpi5", "framework": "peak"}}}, "c.yaml")
    times, sources = resolve_times(graph, cluster, calibration=calibration)
    assert sources["pi"].startswith("sustained:rpi5")  # a device's own fit wins over this machine's
    assert sources["nano"] == ("roofline:jetson-nano (nothing published for onnxruntime; efficiencies "
                               "calibrated on resnet18 here)")
    assert "datasheet peaks asked for" in sources["peak"]
    assert times["nano"] == predict(graph, device_spec("jetson-nano"), calibration).node_time_s
    assert times["peak"] == predict(graph, device_spec("rpi5"), calibration).node_time_s


def test_every_catalogued_device_says_whether_its_prediction_is_calibrated() -> None:
    graph = chain("toy", [("aten.conv2d", 2e8, 400_000, 10_000), ("aten.linear", 1e6, 8_000, 4_000_000)])
    names = list(CATALOG)
    cluster = cluster_from_dict({"devices": {name: {"device": name, "origin": i == 0}
                                             for i, name in enumerate(names)}}, "c.yaml")
    times, sources = resolve_times(graph, cluster)
    for name in names:
        assert all(t > 0 and math.isfinite(t) for t in times[name].values())
        own = (name, "pytorch") in fits()
        assert ("fitted on" in sources[name]) == own
        assert own or "uncalibrated" in sources[name], sources[name]


def test_a_model_published_twice_is_fitted_on_both_figures_and_named_once() -> None:
    v100 = sustained_fit("v100", "pytorch")
    assert v100 is not None and v100.fitted_on == ("resnet50", "efficientnet_b0")
    rows = [e for e in published() if e.device == "v100"]
    assert sorted(e.source for e in rows if e.model == "resnet50") == ["nvidia-dle-v100", "skb-v100"]


def test_a_device_built_in_python_is_predicted_as_a_cluster_file_would() -> None:
    from coinfer.cluster import Cluster, Device

    graph = chain("toy", [("aten.conv2d", 2e8, 400_000, 10_000)])
    pi = Device("pi", "end", 48e9, catalog="rpi4b", time_model="roofline", origin=True)  # no framework given
    times, sources = resolve_times(graph, Cluster("c", (pi,)))
    from_file, _ = resolve_times(graph, cluster_from_dict({"devices": {"pi": {"device": "rpi4b", "origin": True}}},
                                                          "c.yaml"))
    assert sources["pi"].startswith("sustained:rpi4b (pytorch") and times == from_file


def test_compare_says_where_each_devices_times_come_from(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"version": 1, "name": "toy", "input_bytes": 1e3, "nodes": [
        {"id": "a", "inputs": ["input"], "flops": 1e9, "output_bytes": 1e3, "op": "aten.conv2d"}]}))
    assert main(["compare", str(graph), "--cluster", "dads-4g", "--solvers", "origin-only,dads"]) == 0
    out = capsys.readouterr().out
    assert "node times: pi: sustained:rpi3b (pytorch, uncalibrated" in out and "server: sustained:xeon-e5-2620v4" in out
    assert main(["compare", str(graph), "--cluster", "dads-4g", "--solvers", "dads", "--json"]) == 0
    sources = json.loads(capsys.readouterr().out)["time_sources"]
    assert set(sources) == {"pi", "server"} and "rpi4b's fit transferred" in sources["pi"]


def test_profile_says_when_the_datasheet_roofline_takes_this_machines_efficiencies(
        capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, cache = "python:tests.runtime.tiny_models:cnn", ["--cache-dir", str(tmp_path / "cache")]
    assert main(["profile", model, "--device", "local", "--warmup", "1", "--repeats", "2", *cache]) == 0
    capsys.readouterr()
    assert main(["profile", model, "--device", "analytic:jetson-nano", "--framework", "onnxruntime", *cache]) == 0
    assert "efficiencies calibrated here on cnn" in capsys.readouterr().out
    assert main(["profile", model, "--device", "analytic:rpi5", *cache]) == 0  # its own fit wins over the calibration
    out = capsys.readouterr().out
    assert "calibrated here" not in out and "uncalibrated" not in out
