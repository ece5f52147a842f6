"""The roofline predictor and its calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from profile_helpers import chain, measured

from coinfer.errors import ProfileError
from coinfer.graph import Graph
from coinfer.profile.analytic import Calibration, calibrate, calibrate_on, local_spec, predict
from coinfer.profile.calibration_file import default_calibration_path, load_calibration, save_calibration
from coinfer.profile.catalog import DeviceSpec, device_spec
from coinfer.profile.timings import Profile

TOY = DeviceSpec("toy", "a toy device", "cpu", peak_flops_per_s=1e9, memory_bandwidth_bytes_per_s=1e8,
                 memory_bytes=1e9, power_w=1.0, sources=("test",))


def test_roofline_on_a_compute_bound_and_a_memory_bound_node() -> None:
    # n0 conv: F = 1e8, B = 1000 in + 1e6 out = 1.001e6 bytes.
    #   compute 1e8 / (1e9 * 0.5) = 0.2 s > memory 1.001e6 / 1e8 = 0.01001 s -> 0.2 + 0.001 = 0.201 s
    # n1 relu: F = 2.5e5, B = 1e6 in + 1e6 out = 2e6 bytes.
    #   compute 2.5e5 / (1e9 * 0.05) = 0.005 s < memory 2e6 / 1e8 = 0.02 s -> 0.02 + 0.001 = 0.021 s
    graph = chain("toy", [("aten.conv2d", 1e8, 1_000_000, 0), ("aten.relu", 2.5e5, 1_000_000, 0)])
    cal = Calibration(1e9, 1e8, node_overhead_s=1e-3, efficiency={"conv": 0.5, "elementwise": 0.05})
    profile = predict(graph, TOY, cal)
    assert profile.node_time_s["n0"] == pytest.approx(0.201)
    assert profile.node_time_s["n1"] == pytest.approx(0.021)
    assert profile.device == "analytic:toy" and profile.method == "analytic"


def test_hand_written_nodes_use_the_other_kind_and_default_overhead() -> None:
    graph = chain("hand", [("", 1e9, 10, 0)])
    # default efficiency of "other" is 0.1 and the default CPU overhead 10 us: 1e9 / (1e9 * 0.1) + 1e-5
    assert predict(graph, TOY).node_time_s["n0"] == pytest.approx(10.0 + 1e-5)


def test_faster_catalogued_device_predicts_less_time() -> None:
    graph = chain("g", [("aten.conv2d", 1e9, 100_000, 10_000)])
    fast, slow = predict(graph, device_spec("v100")), predict(graph, device_spec("rpi4b"))
    assert fast.total_time_s < slow.total_time_s


def _synthetic(
    peak: float, bandwidth: float, overhead: float, eff: dict[str, float]
) -> tuple[Graph, Profile]:
    specs = [("aten.conv2d", 1e8 * (k + 1), 1000, 0) for k in range(5)]
    specs += [("aten.linear", 3e7 * (k + 1), 1000, 0) for k in range(4)]
    graph = chain("synthetic", specs)
    kinds = ["conv"] * 5 + ["matmul"] * 4
    times = {f"n{k}": specs[k][1] / (peak * eff[kinds[k]]) + overhead for k in range(len(specs))}
    return graph, measured(graph, times, peak_flops_per_s=peak, memory_bandwidth_bytes_per_s=bandwidth,
                           node_overhead_s=overhead)


def test_calibration_recovers_known_efficiencies() -> None:
    graph, profile = _synthetic(1e10, 1e10, 2e-5, {"conv": 0.3, "matmul": 0.6})
    cal = calibrate(profile, graph)
    assert cal.efficiency["conv"] == pytest.approx(0.3)
    assert cal.efficiency["matmul"] == pytest.approx(0.6)
    assert "elementwise" not in cal.efficiency  # no such node: keeps the default
    # predicting the same graph with the calibration reproduces the measurement
    again = predict(graph, local_spec(cal), cal)
    for node_id, t in profile.node_time_s.items():
        assert again.node_time_s[node_id] == pytest.approx(t)


def test_calibration_is_json_serialisable() -> None:
    graph, profile = _synthetic(1e10, 1e10, 2e-5, {"conv": 0.3, "matmul": 0.6})
    cal = calibrate(profile, graph)
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


def test_calibration_clips_efficiency_to_one() -> None:
    graph, profile = _synthetic(1e10, 1e10, 0.0, {"conv": 0.3, "matmul": 0.6})
    # Told a peak 100x below the true one, the fitted efficiency would be 30: clipped to 1.
    cal = calibrate(profile, graph, peak_flops_per_s=1e8)
    assert cal.efficiency["conv"] == 1.0


def test_calibration_needs_the_machine_rates() -> None:
    graph = chain("g", [("aten.conv2d", 1e8, 1000, 0)])
    with pytest.raises(ProfileError, match="peak_flops_per_s"):
        calibrate(measured(graph, {"n0": 0.1}), graph)


def test_calibration_rejects_a_profile_of_another_graph() -> None:
    _, profile = _synthetic(1e10, 1e10, 0.0, {"conv": 0.3, "matmul": 0.6})
    other = chain("other", [("aten.conv2d", 5.0, 1, 0)])
    with pytest.raises(ProfileError, match="re-profile"):
        calibrate_on([(other, profile)])


def test_calibration_file_round_trip_and_errors(tmp_path: Path) -> None:
    graph, profile = _synthetic(1e10, 1e10, 2e-5, {"conv": 0.3, "matmul": 0.6})
    cal = calibrate(profile, graph)
    path = default_calibration_path(tmp_path)
    save_calibration(cal, path)
    assert load_calibration(path) == cal
    path.write_text('{"version": 1, "peak_flops_per_s": 1.0}')
    with pytest.raises(ProfileError, match=r"calibration\.json: .*re-run the calibration"):
        load_calibration(path)
