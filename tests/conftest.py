"""Shared toy problems, small enough to work out by hand in a comment."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import settings

from coinfer.api import make_problem
from coinfer.cluster import Cluster
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.files.graph_file import graph_from_dict
from coinfer.graph import Graph

# CI runs the same examples every time (a failure found locally is added as an explicit test);
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# input (1 MB) -> a (1 GFLOP, 2 MB out, 1 MB params) -> b (2 GFLOP, 1 kB out, 4 MB params)
TOY_CHAIN: dict[str, Any] = {
    "version": 1, "name": "toy", "input_bytes": 1e6,
    "nodes": [
        {"id": "a", "inputs": ["input"], "flops": 1e9, "output_bytes": 2e6, "param_bytes": 1e6},
        {"id": "b", "inputs": ["a"], "flops": 2e9, "output_bytes": 1e3, "param_bytes": 4e6},
    ],
}

# phone: 1 GFLOP/s, 2 W busy, 10 MB; edge: 10 GFLOP/s, 0.001 USD/s; a 1 MB/s link both ways
# with 10 ms latency, 5 ms per-message overhead, 1.5 W transmit power and 1% failure.
TOY_CLUSTER: dict[str, Any] = {
    "devices": {
        "phone": {"flops_per_s": 1e9, "power_w": 2.0, "memory_bytes": 1e7, "origin": True,
                  "failure_probability": 0.001},
        "edge": {"flops_per_s": 1e10, "price_usd_per_s": 1e-3, "failure_probability": 0.002},
    },
    "links": [{"between": ["phone", "edge"], "bandwidth_bits_per_s": 8e6, "latency_s": 0.01,
               "overhead_s": 0.005, "power_w": 1.5, "failure_probability": 0.01}],
}


@pytest.fixture
def toy_graph() -> Graph:
    return graph_from_dict(TOY_CHAIN)


@pytest.fixture
def toy_cluster() -> Cluster:
    return cluster_from_dict(TOY_CLUSTER, "toy.yaml")


@pytest.fixture
def toy_problem(toy_graph: Graph, toy_cluster: Cluster):  # type: ignore[no-untyped-def]
    return make_problem(toy_graph, toy_cluster)
