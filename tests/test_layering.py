"""The import direction of DESIGN.md: planning and costing never need torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _assert_in_a_fresh_process(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_planning_and_costing_do_not_import_torch() -> None:
    _assert_in_a_fresh_process(
        "import sys, coinfer, coinfer.cost, coinfer.solve, coinfer.cli, coinfer.files.plan_file, "
        "coinfer.profile.analytic, coinfer.profile.regression, coinfer.capture\n"
        "heavy = [m for m in ('torch', 'torchvision', 'transformers', 'onnx') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )


def test_a_worker_imports_no_model_zoo_and_no_capture_code() -> None:
    """What a worker runs comes from its deployment: it never needs torchvision, transformers, onnx or the
    client's packaging (which builds programs from model specs), so a Raspberry Pi holds only the framework
    and its part. (`import coinfer` binds the pure-Python capture functions; a worker never calls them.)"""
    _assert_in_a_fresh_process(
        "import sys, coinfer.runtime.worker, coinfer.runtime.worker.server, coinfer.runtime.torch_stages, "
        "coinfer.cli.worker_cmd\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torchvision', 'transformers', 'onnx', 'onnxruntime')\n"
        "         or m.startswith(('coinfer.runtime.packaging', 'coinfer.runtime.reference'))]\n"
        "assert not heavy, heavy\n"
    )


def test_a_serving_worker_has_not_loaded_torchvision(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    pytest.importorskip("torchvision")
    from coinfer.api import make_problem
    from coinfer.capture import capture
    from coinfer.files.cluster_file import cluster_from_dict
    from coinfer.plan import parse_plan
    from coinfer.runtime.local import LocalWorkers
    from coinfer.runtime.run import RunOptions, deploy

    graph = capture("torchvision:squeezenet1_1")
    cluster = cluster_from_dict({"devices": {"a": {"flops_per_s": 1e10, "origin": True}, "b": {"flops_per_s": 1e10}},
                                 "links": [{"between": ["a", "b"], "bandwidth_bits_per_s": 1e9}]}, "two.yaml")
    problem = make_problem(graph, cluster)
    half = graph.nodes[len(graph.nodes) // 2].id
    plan = parse_plan(f"{graph.nodes[0].id}..{half}@a | {graph.nodes[len(graph.nodes) // 2 + 1].id}.."
                      f"{graph.nodes[-1].id}@b", graph, ("a", "b"))
    with LocalWorkers(("a", "b"), cwd=tmp_path) as workers, workers.client() as client:
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=1))
        for process in workers.processes.values():
            maps = Path(f"/proc/{process.pid}/maps").read_text()
            assert "libtorch" in maps and "torchvision" not in maps
