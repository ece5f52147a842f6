"""Real worker processes on loopback: lossless runs, pipelining, and every kind of bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest

from coinfer.errors import WorkerError
from coinfer.runtime import wire
from coinfer.runtime.client import Client
from coinfer.runtime.delivery import run_requests
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs, reference_outputs
from coinfer.runtime.run import RunOptions, deploy, run_plan
from tests.runtime.conftest import HOPPING, MAX_MESSAGE_BYTES, client_for, tiny_problem


def test_a_hopping_plan_is_bit_identical_to_the_unpartitioned_model(workers: LocalWorkers) -> None:
    plan, problem = tiny_problem("cnn", HOPPING)
    x = example_inputs(problem.graph, seed=3)
    with client_for(workers) as client:
        report = run_plan(plan, problem, client, workers.endpoint,
                          RunOptions(requests=6, in_flight=3, verify=True, plan_version=11), x)
    assert report["ok"] == 6 and report["failed"] == 0
    assert report["bit_identical"] and report["max_abs_err"] == 0.0
    # every stage ran once per request, warm-up included
    assert [s["runs"] for s in report["stages"]] == [7, 7, 7, 7]


def test_many_requests_in_flight_each_get_their_own_answer(workers: LocalWorkers) -> None:
    plan, problem = tiny_problem("cnn", "stem..add@b | left..head@c")
    inputs = {i: example_inputs(problem.graph, seed=i) for i in range(1, 9)}
    with client_for(workers) as client:
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=12))
        outcomes = run_requests(client, "a", 12, ("linear",), lambda i: inputs[i], 8, in_flight=8)
    assert [o.request_id for o in outcomes] == list(range(1, 9)) and all(o.ok for o in outcomes)
    for o in outcomes:  # request i's answer is the model's answer on input i, not another's
        assert np.array_equal(o.outputs["linear"], reference_outputs(problem.graph, inputs[o.request_id])["linear"])


def _expect_error(client: Client, request_id: int, frames: list, version: int) -> dict:
    client.data["a"].send_multipart(frames)
    pending = {}
    from coinfer.runtime.client import Outcome

    pending[request_id] = Outcome(request_id, time.perf_counter())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not client.stray_errors:
        done = client.collect(pending, ("linear",), 0.2)
        if done:
            return done[0].errors[0]
    assert client.stray_errors, "the worker reported nothing"
    return client.stray_errors.pop()


def _still_serves(client: Client, version: int, x: dict) -> None:
    outcomes = run_requests(client, "a", version, ("linear",), lambda _: x, 1, timeout_s=10)
    assert outcomes[0].ok, outcomes[0].errors


@pytest.mark.parametrize("case", ["wrong shape", "wrong dtype", "unknown tensor", "unknown version", "garbage",
                                  "truncated payload", "over the size limit"])
def test_bad_input_gets_an_error_naming_it_and_the_worker_keeps_serving(workers: LocalWorkers, case: str) -> None:
    plan, problem = tiny_problem("cnn", "stem..add@a | left..head@b")
    x = example_inputs(problem.graph)
    with client_for(workers) as client:
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=13))
        good = x["input"]
        frames: list = {
            "wrong shape": lambda: wire.tensor_frames(np.zeros((1, 3, 8, 8), np.float32), "input", 5, 13),
            "wrong dtype": lambda: wire.tensor_frames(good.astype(np.float64), "input", 5, 13),
            "unknown tensor": lambda: wire.tensor_frames(good, "no_such_value", 5, 13),
            "unknown version": lambda: wire.tensor_frames(good, "input", 5, 999),
            "garbage": lambda: [b"not a header", b"", b"junk"],
            "truncated payload": lambda: [*wire.tensor_frames(good, "input", 5, 13)[:2], b"\0" * 10],
            "over the size limit": lambda: wire.tensor_frames(np.zeros(MAX_MESSAGE_BYTES, np.float32), "input", 5, 13),
        }[case]()
        error = _expect_error(client, 5, frames, 13)
        text = error["error"]
        expected_words = {"wrong shape": ["input", "[1, 3, 8, 8]", "[1, 3, 16, 16]"],
                          "wrong dtype": ["input", "float64", "float32"], "unknown tensor": ["no_such_value"],
                          "unknown version": ["999"], "garbage": ["header"], "truncated payload": ["payload"],
                          "over the size limit": ["limit", str(MAX_MESSAGE_BYTES)]}[case]
        assert all(w in text for w in expected_words), text
        assert error["worker"] == "a"
        _still_serves(client, 13, x)


def test_a_stage_that_raises_names_its_node_and_the_worker_goes_on(workers: LocalWorkers) -> None:
    plan, problem = tiny_problem("tokens", "embed@b | proj..sum_1@a")
    with client_for(workers) as client:
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=14))
        bad = {"input": np.full((1, 6), 99, dtype=np.int64)}  # ids past the 50-row embedding table
        outcome = run_requests(client, "a", 14, ("sum_1",), lambda _: bad, 1, timeout_s=10)[0]
        assert not outcome.ok
        error = outcome.errors[0]
        assert error["worker"] == "b" and error["node"] == "embed" and "IndexError" in error["exception"]
        good = {"input": np.arange(6, dtype=np.int64).reshape(1, 6)}
        assert run_requests(client, "a", 14, ("sum_1",), lambda _: good, 1, timeout_s=10, first_id=2)[0].ok


def test_a_worker_that_is_down_is_named_within_the_timeout() -> None:
    with Client({"edge": "tcp://127.0.0.1:9"}, timeout_s=0.5) as client:
        start = time.monotonic()
        with pytest.raises(WorkerError, match=r"worker 'edge' at tcp://127.0.0.1:9 did not answer"):
            client.check("edge", {"op": "health"})
        assert time.monotonic() - start < 3


def test_a_deployment_the_worker_cannot_serve_is_refused_with_the_reason(workers: LocalWorkers) -> None:
    with client_for(workers) as client:
        reply = client.call("b", {"op": "deploy", "plan_version": 0})
        assert not reply["ok"] and "plan_version" in reply["error"]
        reply = client.call("b", {"op": "fly"})
        assert not reply["ok"] and "unknown control op 'fly'" in reply["error"]


def test_local_workers_are_stopped_also_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), LocalWorkers(("x",)) as running:
        processes = list(running.processes.values())
        raise RuntimeError("boom")
    assert all(p.poll() is not None for p in processes)


def test_a_worker_emulating_a_catalogued_device_holds_stages_to_its_roofline(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from coinfer.profile.analytic import predict
    from coinfer.profile.catalog import device_spec
    from tests.runtime.conftest import REPO

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    plan, problem = tiny_problem("cnn", "stem..add@a | left..head@b")
    with LocalWorkers(("a", "b"), extra_args=("--emulate", "rpi3b")) as pis, \
            pis.client(timeout_s=5.0) as client:
        report = run_plan(plan, problem, client, pis.endpoint, RunOptions(requests=2, plan_version=15),
                          example_inputs(problem.graph))
    roofline = predict(problem.graph, device_spec("rpi3b")).node_time_s
    for stage, row in zip(plan.stages, report["stages"], strict=True):
        assert row["emulated_s"] == pytest.approx(sum(roofline[n] for n in stage.node_ids))
        assert row["held_s"] >= row["emulated_s"] * 0.999  # held at least as long as the Pi would take
