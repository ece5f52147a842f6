"""Energy of a request: the power model equals cost.evaluate's; RAPL counters with wrap-around."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from coinfer.adapt.energy import RaplMeter, RaplReading, combine, energy_between_j, request_energy_by_device_j
from coinfer.adapt.records import HopSample, StageSample
from coinfer.api import plan
from coinfer.cluster import Dvfs
from coinfer.cost import evaluate
from coinfer.problem import Problem

MAX_UJ = 262_143_328_850  # a real package counter's max_energy_range_uj


@pytest.mark.parametrize("placement", ["a@phone | b@edge", "phone", "edge"])
def test_model_energy_equals_evaluate_when_times_are_the_predicted_ones(toy_problem: Problem,
                                                                        placement: str) -> None:
    # toy: phone 2 W busy, link 1.5 W transmit; the edge draws nothing.
    chosen = plan(toy_problem, placement=placement)
    cost = evaluate(chosen, toy_problem)
    stages = [StageSample(s.device, (s.first, s.last), s.compute_s, s.compute_s, 0.0) for s in cost.stages]
    hops = [HopSample(t.source, t.target, t.wire_bytes, t.time_s, 0.0) for t in cost.transfers]
    got = request_energy_by_device_j(toy_problem.cluster, stages, hops)
    assert got == pytest.approx(dict(cost.energy_by_device_j))


def test_model_energy_uses_the_dvfs_power(toy_problem: Problem) -> None:
    # kappa f^3 = 1e-27 x (1e9)^3 = 1 W, so 3 s busy is 3 J (power_w's 2 W is ignored).
    cluster = toy_problem.cluster
    devices = tuple(dataclasses.replace(d, dvfs=Dvfs(1e-27, 1e9, 1.0)) if d.origin else d for d in cluster.devices)
    scaled = dataclasses.replace(cluster, devices=devices)
    got = request_energy_by_device_j(scaled, [StageSample("phone", ("a",), 3.0, 3.0, 0.0)], [])
    assert got == {"phone": pytest.approx(3.0), "edge": 0.0}


def test_combine_names_the_source_of_each_device() -> None:
    energy, sources = combine({"pi": 1.0, "laptop": 2.0}, {"laptop": 2.5})
    assert energy == {"pi": 1.0, "laptop": 2.5}
    assert sources == {"pi": "model", "laptop": "rapl"}


def zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def test_rapl_reads_package_zones_and_handles_wraparound(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", MAX_UJ - 1_000_000)  # 1 J before wrapping
    zone(tmp_path, "intel-rapl:0:0", "core", 5)  # inside package-0: not counted again
    zone(tmp_path, "intel-rapl:1", "psys", 7)  # the platform: overlaps the package
    zone(tmp_path, "intel-rapl:2", "package-1", 10_000_000)
    meter = RaplMeter(tmp_path)
    assert meter.available()
    assert [z.name for z in meter.zones()] == ["intel-rapl:0", "intel-rapl:2"]
    before = meter.read()
    zone(tmp_path, "intel-rapl:0", "package-0", 2_000_000)  # wrapped: 1 J + 2 J
    zone(tmp_path, "intel-rapl:2", "package-1", 14_000_000)  # 4 J
    assert energy_between_j(before, meter.read()) == pytest.approx(7.0)
    assert meter.source == "rapl"


def test_energy_between_ignores_zones_missing_from_one_reading() -> None:
    before = RaplReading({"intel-rapl:0": 100}, {"intel-rapl:0": MAX_UJ})
    after = RaplReading({"intel-rapl:0": 1_000_100, "intel-rapl:1": 5},
                        {"intel-rapl:0": MAX_UJ, "intel-rapl:1": MAX_UJ})
    assert energy_between_j(before, after) == pytest.approx(1.0)


def test_rapl_is_unavailable_without_a_readable_tree(tmp_path: Path) -> None:
    assert not RaplMeter(tmp_path / "missing").available()
    assert not RaplMeter(tmp_path).available()  # a tree with no zones
    broken = zone(tmp_path, "intel-rapl:0", "package-0", 1)
    (broken / "energy_uj").unlink()
    meter = RaplMeter(tmp_path)
    assert not meter.available()
    with pytest.raises(OSError, match="energy_uj"):
        meter.read()
    (broken / "energy_uj").write_text("not a number\n")
    assert not meter.available()
