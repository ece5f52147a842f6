"""Step programs of small causal LMs and three local workers, shared by the generation tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("zmq")

from coinfer.api import make_problem
from coinfer.cluster import Cluster
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.llm import StepGraphs, capture_steps
from coinfer.problem import Problem
from coinfer.runtime.local import LocalWorkers

DEVICES = ("a", "b", "c")
THREE: dict[str, Any] = {
    "devices": {"a": {"flops_per_s": 1e10, "origin": True}, "b": {"flops_per_s": 1e10}, "c": {"flops_per_s": 1e10}},
    "links": [{"between": [x, y], "bandwidth_bits_per_s": 1e9, "latency_s": 0.0005}
              for x, y in (("a", "b"), ("b", "c"), ("a", "c"))],
}
PROMPT_TOKENS, NEW_TOKENS = 5, 7


@pytest.fixture(scope="session")
def three() -> Cluster:
    return cluster_from_dict(THREE, "three devices")


@pytest.fixture(scope="session")
def tiny_llama() -> StepGraphs:
    """A 3-layer Llama (rotary embeddings, 12 query heads over 4 key-value heads, RMSNorm)."""
    return capture_steps("hf:llama", PROMPT_TOKENS, NEW_TOKENS, layers=3)


def problems(steps: StepGraphs, cluster: Cluster) -> tuple[Problem, Problem]:
    return make_problem(steps.prefill, cluster), make_problem(steps.decode, cluster)


@pytest.fixture(scope="module")
def workers() -> Iterator[LocalWorkers]:
    with LocalWorkers(DEVICES) as running:
        yield running
