"""Micro-batching real models (slow tier): cut inside their DAGs on three workers, equal to the model at batch K.

resnet18 and BERT export the same fx nodes at batch K as at batch 1, so they run micro-batched and
are compared with the unpartitioned model at batch K; GPT-2 adds an op at batch K (it expands its
causal mask to the batch) and is refused with the names; an ONNX resnet18 exported with a dynamic
batch runs its stages in onnxruntime at batch K.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks._cuts import hopping_plan
from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.errors import PlanError
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.graph import Graph
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, run_plan
from tests.runtime.conftest import THREE

pytestmark = pytest.mark.slow


def run_batched(graph: Graph, workers: LocalWorkers, version: int, k: int) -> dict[str, Any]:
    plan = hopping_plan(graph)
    problem = make_problem(graph, cluster_from_dict(THREE, "three.yaml"))
    with workers.client(timeout_s=30) as client:
        options = RunOptions(requests=2 * k, in_flight=2, verify=True, shaping="none", plan_version=version,
                             timeout_s=120, micro_batch=k)
        return run_plan(plan, problem, client, workers.endpoint, options, example_inputs(graph, seed=1))


@pytest.mark.parametrize(("spec", "k"), [("torchvision:resnet18", 4), ("hf:bert", 2)])
def test_real_models_micro_batched_equal_the_model_at_batch_k(spec: str, k: int,
                                                              full_size_workers: LocalWorkers) -> None:
    graph = capture(spec, layers=2, seq_len=32) if spec.startswith("hf:") else capture(spec)
    report = run_batched(graph, full_size_workers, 300 + k, k)
    assert report["ok"] == 2 * k and report["verified"] and report["output_scale"] > 0, report["errors"]
    assert report["bit_identical"], report["max_abs_err"]


def test_gpt2_whose_program_changes_with_the_batch_is_refused(full_size_workers: LocalWorkers) -> None:
    graph = capture("hf:gpt2", layers=2, seq_len=32)
    with pytest.raises(PlanError, match=r"has fx nodes \['expand_2'\] that the graph captured at batch 1 lacks"):
        run_batched(graph, full_size_workers, 310, 2)


def test_an_onnx_model_with_a_dynamic_batch_runs_in_onnxruntime_at_batch_k(full_size_workers: LocalWorkers,
                                                                            tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    path = tmp_path / "resnet18.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(torchvision.models.resnet18().eval(), (torch.randn(1, 3, 224, 224),), str(path), dynamo=True,
                      dynamic_shapes=({0: batch},))
    report = run_batched(capture(f"onnx:{path}"), full_size_workers, 320, 4)
    assert report["ok"] == 8 and report["verified"], report["errors"]
    assert report["bit_identical"] or report["max_abs_err"] <= 1e-5 * report["output_scale"], report
