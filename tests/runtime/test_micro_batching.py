"""Micro-batching: K requests packed along dimension 0, served as one batch by real workers, split back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.cli import main
from coinfer.cost import evaluate
from coinfer.errors import PlanError, UserInputError, WorkerError
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.plan import parse_plan
from coinfer.profile.analytic import predict
from coinfer.profile.catalog import device_spec
from coinfer.profile.sustained import predict_sustained, sustained_fit
from coinfer.runtime.batching import at_batch, batched_graph, pack, run_batched_requests, unpack
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs, reference_outputs
from coinfer.runtime.run import RunOptions, deploy, run_plan
from tests.runtime.conftest import DEVICES, HOPPING, THREE, client_for, tiny_problem


def test_a_micro_batched_run_equals_the_unpartitioned_model_at_batch_k(workers: LocalWorkers) -> None:
    plan, problem = tiny_problem("cnn", HOPPING)
    x = example_inputs(problem.graph, seed=3)
    options = RunOptions(requests=8, in_flight=2, verify=True, emulate=True, plan_version=41, micro_batch=4)
    with client_for(workers) as client:
        report = run_plan(plan, problem, client, workers.endpoint, options, x)
    assert report["requests"] == 8 and report["ok"] == 8 and report["failed"] == 0
    assert report["micro_batch"] == 4 and report["throughput_rps"] > 0
    assert report["bit_identical"] and report["max_abs_err"] == 0.0 and report["verified"]
    assert [s["runs"] for s in report["stages"]] == [3, 3, 3, 3]  # 2 batches and the warm-up batch
    # these devices are described by flops_per_s, so a stage of 4 requests is held 4 times as long
    for stage, row in zip(plan.stages, report["stages"], strict=True):
        alone_s = sum(problem.node_time_s[stage.device][n] for n in stage.node_ids)
        assert row["emulated_s"] == pytest.approx(4 * alone_s)
    # and the prediction is for the batch: 4 times the compute and the bytes of one request
    alone = evaluate(plan, problem)
    assert report["predicted"]["compute_s"] == pytest.approx(4 * alone.compute_s)
    assert report["predicted"]["cut_bytes"] == 4 * alone.cut_bytes


def test_each_request_gets_its_own_rows_of_the_batch(workers: LocalWorkers) -> None:
    plan, problem = tiny_problem("cnn", "stem..add@b | left..head@c")
    inputs = {i: example_inputs(problem.graph, seed=i) for i in range(1, 9)}
    with client_for(workers) as client:
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=42, micro_batch=4))
        outcomes = run_batched_requests(client, "a", 42, ("linear",), lambda i: inputs[i], 8, 4, in_flight=2)
    assert [o.request_id for o in outcomes] == list(range(1, 9)) and all(o.ok for o in outcomes)
    for first in (1, 5):  # batch 1 packs requests 1-4, batch 2 requests 5-8
        batch = reference_outputs(problem.graph, pack([inputs[i] for i in range(first, first + 4)]))["linear"]
        for j in range(4):
            got = outcomes[first - 1 + j].outputs["linear"]
            assert got.shape == (1, 5) and np.array_equal(got, batch[j:j + 1])
            # and it is request first+j's own answer (to rounding: kernels differ between batch sizes)
            alone = reference_outputs(problem.graph, inputs[first + j])["linear"]
            np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(outcomes[0].outputs["linear"], outcomes[1].outputs["linear"])


def test_a_model_whose_first_dimension_is_not_a_batch_is_refused(workers: LocalWorkers) -> None:
    plan, problem = tiny_problem("rows", "proj@a | relu..sum_1@b")
    # the client refuses before deploying anything: it builds the batch-K program (a mistake in the input)
    with client_for(workers) as client, pytest.raises(PlanError, match="not a batch of independent samples"):
        run_plan(plan, problem, client, workers.endpoint, RunOptions(requests=2, plan_version=43, micro_batch=2),
                 example_inputs(problem.graph))


def test_requests_must_fill_whole_batches() -> None:
    plan, problem = tiny_problem("cnn", "stem..add@a | left..head@b")
    with pytest.raises(UserInputError, match=r"requests=10 is not a multiple of micro_batch=4.*requests=12"):
        run_plan(plan, problem, None, lambda d, s: "", RunOptions(requests=10, micro_batch=4),  # type: ignore[arg-type]
                 example_inputs(problem.graph))


def _onnx_file(path: Path, batch: int | str) -> Path:
    """x[batch, 4] -> MatMul -> Relu -> MatMul -> y[batch, 3], with random weights."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
               for n, s in (("w1", (4, 8)), ("w2", (8, 3)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _onnx_problem(path: Path):  # type: ignore[no-untyped-def]
    graph = capture(f"onnx:{path}")
    problem = make_problem(graph, cluster_from_dict(THREE, "three.yaml"))
    return parse_plan("mm1..relu@a | mm2@b", graph, DEVICES), problem


def test_an_onnx_model_with_a_dynamic_batch_runs_micro_batched(workers: LocalWorkers, tmp_path: Path) -> None:
    plan, problem = _onnx_problem(_onnx_file(tmp_path / "dynamic.onnx", "N"))
    inputs = {i: example_inputs(problem.graph, seed=i) for i in range(1, 5)}
    with client_for(workers) as client:
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=44, micro_batch=2))
        outcomes = run_batched_requests(client, "a", 44, ("y",), lambda i: inputs[i], 4, 2)
    assert all(o.ok for o in outcomes), outcomes[0].errors
    for o in outcomes:
        first = o.request_id - (o.request_id - 1) % 2
        batch = reference_outputs(problem.graph, pack([inputs[first], inputs[first + 1]]))["y"]
        row = o.request_id - first
        assert np.array_equal(o.outputs["y"], batch[row:row + 1])


def test_an_onnx_model_with_a_fixed_batch_is_refused_with_the_reason(workers: LocalWorkers, tmp_path: Path) -> None:
    plan, problem = _onnx_problem(_onnx_file(tmp_path / "fixed.onnx", 1))
    with client_for(workers) as client, \
            pytest.raises(PlanError, match="micro-batching needs a dynamic batch dimension"):
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=45, micro_batch=2))


def test_unpack_refuses_an_output_that_does_not_split() -> None:
    assert [p["y"].tolist() for p in unpack({"y": np.arange(4).reshape(2, 2)}, 2)] == [[[0, 1]], [[2, 3]]]
    with pytest.raises(WorkerError, match=r"shape \[3\].*does not split into 2"):
        unpack({"y": np.zeros(3)}, 2)


def test_the_batched_plan_scales_flops_and_activations_and_keeps_the_weights() -> None:
    plan, problem = tiny_problem("cnn", "stem..add@a | left..head@b")
    _, batched = at_batch(plan, problem, 4)
    for one, many in zip(problem.graph.nodes, batched.graph.nodes, strict=True):
        assert many.flops == 4 * one.flops and many.output_bytes == 4 * one.output_bytes
        assert many.param_bytes == one.param_bytes
    assert batched.graph.inputs[0].spec.shape == (4, 3, 16, 16)


@pytest.mark.parametrize("framework", ["pytorch", "peak"])
def test_on_a_catalogued_device_a_batch_takes_the_predicted_time_of_the_batched_graph(framework: str) -> None:
    graph = capture("python:tests.runtime.tiny_models:cnn")
    cluster = cluster_from_dict({"devices": {"pi": {"device": "rpi4b", "framework": framework, "origin": True}},
                                 "links": []}, "pi.yaml")
    problem = make_problem(graph, cluster)
    plan = parse_plan("stem..head@pi", graph, ("pi",))
    _, batched = at_batch(plan, problem, 8)
    fit = sustained_fit("rpi4b", "pytorch") if framework == "pytorch" else None
    expected = (predict_sustained(batched_graph(graph, 8), device_spec("rpi4b"), fit) if fit is not None
                else predict(batched_graph(graph, 8), device_spec("rpi4b"))).node_time_s
    for n in graph.nodes:
        assert batched.node_time_s["pi"][n.id] == pytest.approx(expected[n.id])
    # weights are read once per batch, so 8 requests together take less than 8 alone on this roofline
    assert sum(batched.node_time_s["pi"].values()) < 8 * sum(problem.node_time_s["pi"].values())


# -- the command line ---------------------------------------------------------------------------

def test_coinfer_run_micro_batch_json(plan_file: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    capsys.readouterr()
    code = main(["run", str(plan_file), "--local", "--micro-batch", "2", "--requests", "4", "--verify",
                 "--save-output", str(tmp_path / "y.npy"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["micro_batch"] == 2 and doc["requests"] == 4 and doc["ok"] == 4 and doc["failed"] == 0
    assert set(doc["latency_s"]) == {"p50", "p95", "mean"} and doc["throughput_rps"] > 0
    assert doc["bit_identical"] and doc["max_abs_err"] == 0.0
    assert doc["predicted"]["throughput_rps"] > 0 and len(doc["stages"]) == 2
    assert [s["runs"] for s in doc["stages"]] == [3, 3]  # 2 batches and the warm-up batch
    assert np.load(tmp_path / "y.npy").shape == (1, 5)  # one request's output, not the batch's


@pytest.mark.parametrize(("argv", "words"), [
    (["--requests", "5", "--micro-batch", "2"], "--requests 5 is not a multiple of --micro-batch 2"),
    (["--micro-batch", "0"], "--micro-batch must be at least 1"),
])
def test_coinfer_run_micro_batch_mistakes_are_one_line_errors(plan_file: Path, capsys: pytest.CaptureFixture[str],
                                                              argv: list[str], words: str) -> None:
    capsys.readouterr()
    assert main(["run", str(plan_file), "--local", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
