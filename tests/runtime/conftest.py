"""Workers for the runtime tests: real processes on loopback, started once and always stopped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("zmq")

from coinfer.api import make_problem
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.plan import Plan, parse_plan
from coinfer.problem import Problem
from coinfer.runtime.client import Client
from coinfer.runtime.local import LocalWorkers

REPO = Path(__file__).resolve().parents[2]
DEVICES = ("a", "b", "c")
# Three devices on fast links (the tests check behaviour, not timing): a is the origin.
THREE: dict[str, Any] = {
    "devices": {"a": {"flops_per_s": 1e10, "origin": True}, "b": {"flops_per_s": 1e10}, "c": {"flops_per_s": 1e10}},
    "links": [{"between": [x, y], "bandwidth_bits_per_s": 1e9, "latency_s": 0.0005}
              for x, y in (("a", "b"), ("b", "c"), ("a", "c"))],
}
MAX_MESSAGE_BYTES = 200_000
# The request hops a -> b -> a -> c -> a: the residual add runs on b while its skip input was made
# on a (two tensors cross that cut), the branches split across a and c, and the result returns to a.
HOPPING = "stem..relu@a | block.0..add@b | left@a | right..head@c"
TWO_STAGES = "stem..add@a | left..head@b"


@pytest.fixture(scope="session")
def workers() -> Iterator[LocalWorkers]:
    """Workers a, b, c (tiny_models importable; tensors over 200 kB refused)."""
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), previous) if p)
    try:
        with LocalWorkers(DEVICES, extra_args=("--max-message-bytes", str(MAX_MESSAGE_BYTES))) as running:
            yield running
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


@pytest.fixture(scope="module")
def full_size_workers() -> Iterator[LocalWorkers]:
    """Workers a, b, c with the default message limit (real activations are megabytes); they can
    import this repository's modules (tests.runtime.tiny_models, benchmarks.*)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
        with LocalWorkers(DEVICES) as running:
            yield running


def client_for(workers: LocalWorkers) -> Client:
    return workers.client(timeout_s=5.0)


@pytest.fixture
def plan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plan file of tiny_models.cnn over a and b (`TWO_STAGES`), for the command-line tests."""
    from coinfer.cli import main

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the workers import tests.runtime.tiny_models
    cluster = tmp_path / "three.yaml"
    cluster.write_text(yaml.safe_dump(THREE))
    out = tmp_path / "plan.json"
    code = main(["plan", "python:tests.runtime.tiny_models:cnn", "--cluster", str(cluster), "--placement", TWO_STAGES,
                 "-o", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    return out


_GRAPHS: dict[str, Any] = {}


def tiny_problem(callable_name: str, placement: str) -> tuple[Plan, Problem]:
    """A plan over a, b, c for a tests/runtime/tiny_models model, e.g. ("cnn", "stem..block@a | ...")."""
    from coinfer.capture import capture

    spec = f"python:tests.runtime.tiny_models:{callable_name}"
    if spec not in _GRAPHS:
        _GRAPHS[spec] = capture(spec)
    graph = _GRAPHS[spec]
    problem = make_problem(graph, cluster_from_dict(THREE, "three.yaml"))
    return parse_plan(placement, graph, DEVICES), problem


def raw_dealer(workers: LocalWorkers, client: Client, device: str, kind: str) -> Any:
    """A DEALER to a worker's control or data socket holding the client's key pair, so that whatever
    it sends reaches the worker's parsers (for the attack tests and benchmarks/fuzz_worker.py)."""
    import zmq

    from coinfer.runtime.deploy import data_endpoint
    from coinfer.runtime.security import connect_securely

    assert workers.security is not None
    sock = client.context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    connect_securely(sock, workers.security.keys, workers.security.worker_keys[device])
    endpoint = workers.endpoint(device)
    if kind == "data":
        endpoint = data_endpoint(endpoint, client.check(device, {"op": "health"})["data_port"])
    sock.connect(endpoint)
    return sock
