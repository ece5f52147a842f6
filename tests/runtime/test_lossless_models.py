"""Real models cut inside their DAG structure, run on three worker processes, equal to the unpartitioned model.

Each plan sends the request a -> b -> c -> a, with each cut placed where at least two tensors cross
it when the model has such a place near there (inside a residual block, between inception branches,
across attention's skip connections).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks._cuts import crossing_values, hopping_plan
from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.graph import Graph
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, run_plan
from tests.runtime.conftest import THREE

pytestmark = pytest.mark.slow


MODELS = ["torchvision:resnet50", "torchvision:googlenet", "torchvision:densenet121",
          "torchvision:mobilenet_v3_large",
          # torchvision's ViT zeroes its head at random init (an all-zero output compares nothing): this
          # variant draws those weights at random
          "python:benchmarks.lossless_survey:nonzero_vit_b_16", "torchvision:swin_t", "hf:gpt2"]


def run_and_verify(graph: Graph, workers: LocalWorkers, version: int) -> dict:
    plan = hopping_plan(graph)
    problem = make_problem(graph, cluster_from_dict(THREE, "three.yaml"))
    with workers.client(timeout_s=30) as client:
        options = RunOptions(requests=2, verify=True, shaping="none", plan_version=version, timeout_s=120)
        return run_plan(plan, problem, client, workers.endpoint, options, example_inputs(graph, seed=1))


def assert_lossless(report: dict) -> None:
    assert report["ok"] == 2 and report["verified"], report["errors"]
    assert report["output_scale"] > 0, "the output is all zeros: nothing upstream was compared"
    # bit-identical where the kernels are deterministic; else within 1e-5 of the output's scale
    assert report["bit_identical"] or report["max_abs_err"] <= 1e-5 * report["output_scale"], report


@pytest.mark.parametrize("spec", MODELS)
def test_models_cut_inside_their_dags_match_the_unpartitioned_model(spec: str,
                                                                    full_size_workers: LocalWorkers) -> None:
    graph = capture(spec, layers=2, seq_len=32) if spec.startswith("hf:") else capture(spec)
    plan = hopping_plan(graph)
    assert len(plan.stages) == 4
    assert any(crossing_values(graph, graph.index[s.node_ids[0]]) >= 2 for s in plan.stages[1:]), \
        "no cut falls inside a DAG structure"
    assert_lossless(run_and_verify(graph, full_size_workers, 100 + MODELS.index(spec)))


def test_an_onnx_model_runs_its_partitions_in_onnxruntime(full_size_workers: LocalWorkers, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    path = tmp_path / "resnet18.onnx"
    torch.onnx.export(torchvision.models.resnet18().eval(), (torch.randn(1, 3, 224, 224),), str(path), dynamo=True)
    graph = capture(f"onnx:{path}")
    report = run_and_verify(graph, full_size_workers, 200)
    assert_lossless(report)
    assert np.isfinite(report["max_abs_err"])
