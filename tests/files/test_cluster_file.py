"""Cluster files: the accepted forms, and a clear message naming the field for each mistake."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from coinfer.errors import ClusterFileError
from coinfer.files.cluster_file import cluster_from_dict, cluster_from_yaml, cluster_to_dict, load_cluster
from tests.conftest import TOY_CLUSTER

ISSUE_EXAMPLE = """
devices:
  phone: {flops_per_s: 5.0e10, memory_bytes: 4.0e9, power_w: 2.0, origin: true}
  edge:  {flops_per_s: 5.0e11}
links:
  - {between: [phone, edge], bandwidth_bits_per_s: 2.0e7, latency_s: 0.0, power_w: 1.5}
"""


def test_the_documented_example_loads() -> None:
    cluster = cluster_from_yaml(ISSUE_EXAMPLE, "example.yaml")
    assert cluster.origin.name == "phone"
    assert cluster.device("edge").tier == "edge" and cluster.origin.tier == "end"
    up, down = cluster.link("phone", "edge"), cluster.link("edge", "phone")
    assert up is not None and down is not None and up.bytes_per_s == 2.5e6 == down.bytes_per_s


def test_directed_links_are_one_way() -> None:
    doc = copy.deepcopy(TOY_CLUSTER)
    doc["links"] = [{"from": "phone", "to": "edge", "bandwidth_bits_per_s": 1e6},
                    {"from": "edge", "to": "phone", "bandwidth_bits_per_s": 1e7}]
    cluster = cluster_from_dict(doc)
    assert cluster.link("phone", "edge").bandwidth_bits_per_s == 1e6  # type: ignore[union-attr]
    assert cluster.link("edge", "phone").bandwidth_bits_per_s == 1e7  # type: ignore[union-attr]


def test_round_trip_through_a_document() -> None:
    cluster = cluster_from_dict(TOY_CLUSTER, "toy.yaml")
    assert cluster_from_dict(cluster_to_dict(cluster)) == cluster


def mutate(change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(TOY_CLUSTER)
    change(doc)
    return doc


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["devices"]["edge"].update(flops_per_s="fast"), "devices.edge.flops_per_s"),
    (lambda d: d["devices"]["edge"].pop("flops_per_s"), "compute speed"),
    (lambda d: d["devices"]["edge"].update(colour="red"), "devices.edge.colour: Extra inputs"),
    (lambda d: d["links"][0].update(bandwidth_bits_per_s=-5), "links.0.bandwidth_bits_per_s"),
    (lambda d: d["links"][0].update(between=["phone", "gpu"]), "'gpu' is not defined"),
    (lambda d: d["devices"]["phone"].update(origin=False), "exactly one device needs 'origin: true'"),
    (lambda d: d["links"][0].pop("bandwidth_bits_per_s"), "rate as 'bandwidth_bits_per_s'"),
    (lambda d: d["devices"]["edge"].update(failure_probability=2), "less than or equal to 1"),
    (lambda d: d["devices"]["edge"].update(device="quantum-9000"), "devices.edge.device"),
    (lambda d: d["devices"]["edge"].update(background={"arrival_rate_per_s": 5, "service_rate_per_s": 4}),
     "must be below service_rate_per_s"),
    (lambda d: d.pop("devices"), "devices: Field required"),
])
def test_mistakes_name_the_file_and_field(change: Any, expected: str) -> None:
    with pytest.raises(ClusterFileError) as err:
        cluster_from_dict(mutate(change), "mine.yaml")
    assert "mine.yaml" in str(err.value)
    assert expected in str(err.value)


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ClusterFileError, match="phone-edge-cloud"):
        load_cluster("no-such-preset")


def test_bad_yaml_says_where(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("devices:\n  phone: {flops_per_s: 1e9\n")
    with pytest.raises(ClusterFileError, match=r"c.yaml: not valid YAML at line"):
        load_cluster(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match="cannot read"):
        load_cluster(tmp_path / "absent.yaml")
