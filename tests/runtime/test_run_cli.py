"""`coinfer run`, `coinfer worker` and `coinfer bench hop` from the command line, on real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from coinfer.cli import main
from coinfer.profile.profile_file import load_profile
from coinfer.runtime.netns import kernel_shaping_unavailable
from tests.runtime.conftest import THREE, TWO_STAGES


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["run", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_run_local_prints_measured_beside_predicted_and_verifies(plan_file, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, doc = _run(capsys, str(plan_file), "--local", "--requests", "4", "--in-flight", "2", "--verify",
                     "--input-file", str(tmp_path / "x.npy"), "--save-output", str(tmp_path / "y.npy"))
    assert code == 0
    assert doc["requests"] == 4 and doc["ok"] == 4 and doc["failed"] == 0
    assert set(doc["latency_s"]) == {"p50", "p95", "mean"} and doc["throughput_rps"] > 0
    assert doc["plan"] == TWO_STAGES
    assert doc["predicted"]["latency_s"] > 0 and len(doc["stages"]) == 2
    assert doc["bit_identical"] and doc["max_abs_err"] == 0.0 and doc["emulation"] == "plan"
    assert np.load(tmp_path / "y.npy").shape == (1, 5)


@pytest.mark.slow
@pytest.mark.skipif(kernel_shaping_unavailable() is not None, reason=str(kernel_shaping_unavailable()))
def test_run_local_with_kernel_shaping_runs_workers_in_namespaces(plan_file, capsys) -> None:  # type: ignore[no-untyped-def]
    code, doc = _run(capsys, str(plan_file), "--local", "--shaping", "kernel", "--requests", "2", "--verify")
    assert code == 0 and doc["ok"] == 2 and doc["bit_identical"] and doc["shaping"] == "kernel"
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"coinfer-{os.getpid()}-" not in names  # the run removed its namespaces


def test_run_link_trace_slows_the_traced_link_to_the_trace_bandwidth(plan_file, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The plan's a -> b link runs at 1 Gbit/s; the trace holds it at 0.5 Mbit/s, so every request's
    # cut tensor must take at least its bytes at that rate (a lower bound: shaping cannot be beaten).
    trace = tmp_path / "slow.txt"
    trace.write_text("0 0.5\n1000 0.5\n")
    code, doc = _run(capsys, str(plan_file), "--local", "--requests", "3", "--verify", "--link-trace", f"a->b={trace}")
    assert code == 0 and doc["ok"] == 3 and doc["bit_identical"]
    sent_bytes = next(s["sent_bytes"] for s in doc["stages"] if s["device"] == "a")
    assert sent_bytes > 0
    assert doc["latency_s"]["p50"] >= 0.95 * sent_bytes * 8 / 0.5e6
    assert doc["latency_s"]["p50"] > 5 * doc["predicted"]["latency_s"]  # the plan was made for 1 Gbit/s


def test_adapt_serves_live_on_local_workers_and_counts_every_byte(plan_file, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # plan_file's fixture wrote the cluster and made tiny_models importable by the workers
    trace = tmp_path / "drop.txt"
    trace.write_text("0 1000\n1 0.5\n1000 0.5\n")  # a -> b falls from 1 Gbit/s to 0.5 Mbit/s after 1 s
    code = main(["adapt", "python:tests.runtime.tiny_models:cnn", "--cluster", str(tmp_path / "three.yaml"),
                 "--static-solver", "server-only", "--policy", "partial", "--requests", "40",
                 "--trace", f"a->b={trace}", "--verify", "--json", "--save-profiles", str(tmp_path / "seen")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["mode"] == "workers"
    saved = report["saved_profiles"]  # the origin a ran the head at least; b served every node at first
    assert "b" in saved and saved["b"]["measured_nodes"] >= 1
    assert load_profile(saved["b"]["path"]).settings["measured_on"] == "adapt"
    assert report["requests"] == report["ok"] == 40 and report["lost"] == 0 and report["duplicated"] == 0
    assert report["bit_identical"]
    timeline = report["timeline"]
    # the bytes the workers reported per hop add up, request by request, to the cut of its plan
    per_request = [sum(sizes[i] for sizes in timeline["link_bytes"].values()) for i in range(40)]
    assert per_request == timeline["cut_bytes"] and any(per_request)


def test_run_against_a_worker_that_is_down_names_it(plan_file, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["run", str(plan_file), "--workers", "a=127.0.0.1:9,b=127.0.0.1:9", "--connect-timeout-s", "1",
                 "--insecure"])
    assert code == 3  # a worker or the network unreachable
    err = capsys.readouterr().err
    assert "worker 'a' at tcp://127.0.0.1:9 did not answer 'health' within 1 s" in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "words"), [
    (["--local", "--input-file", "missing.npy"], "--input-file missing.npy: cannot read it"),
    (["--local", "--link-trace", "a->b=/no/trace"], "/no/trace does not exist"),
    (["--local", "--link-trace", "a->z=/no/trace"], "no link a -> z"),
    (["--workers", "a=nohost"], "should look like edge=10.0.0.2:5555"),
    (["--local", "--steal"], "this plan has no fused tiled stage"),
])
def test_run_mistakes_are_one_line_errors(plan_file, capsys, argv, words) -> None:  # type: ignore[no-untyped-def]
    assert main(["run", str(plan_file), *argv]) == 2
    assert words in capsys.readouterr().err


def test_run_input_of_the_wrong_shape_says_which(plan_file, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert main(["run", str(plan_file), "--local", "--input-file", str(tmp_path / "x.npy")]) == 2
    assert "shape [1, 3, 8, 8], but input 'input' was captured with shape [1, 3, 16, 16]" in capsys.readouterr().err


def test_a_worker_process_prints_its_endpoint_and_a_taken_port_is_an_error() -> None:
    worker = subprocess.Popen([sys.executable, "-m", "coinfer", "worker", "--listen", "127.0.0.1:0", "--name", "w"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line.startswith("coinfer worker listening on tcp://127.0.0.1:")
        taken = line.strip().rsplit(" ", 1)[1]
        clash = subprocess.run([sys.executable, "-m", "coinfer", "worker", "--listen", taken, "--name", "x"],
                               capture_output=True, text=True, timeout=30)
        assert clash.returncode == 2 and f"cannot listen on {taken}" in clash.stderr
    finally:
        worker.terminate()
        worker.wait(timeout=5)


def test_bench_hop_reports_both_transports(capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["bench", "hop", "--bytes", "4096", "--repeats", "5", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["coinfer_s"] > 0 and doc["raw_socket_s"] > 0 and doc["bytes"] == 4096


def test_bench_hop_measures_curve_too(capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["bench", "hop", "--bytes", "65536", "--repeats", "3", "--curve", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["curve"] and doc["coinfer_s"] > 0


def _plan(tmp_path, model: str, placement: str):  # type: ignore[no-untyped-def]
    """A plan file of tests/runtime/tiny_models' `model` over the three-device cluster."""
    cluster = tmp_path / "three.yaml"
    cluster.write_text(yaml.safe_dump(THREE))
    plan = tmp_path / "plan.json"
    assert main(["plan", f"python:tests.runtime.tiny_models:{model}", "--cluster", str(cluster), "--placement",
                 placement, "-o", str(plan), "--cache-dir", str(tmp_path / "c")]) == 0
    return plan


def test_a_failed_request_exits_1_naming_the_node(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    plan = _plan(tmp_path, "tokens", "embed@b | proj..sum_1@a")
    np.save(tmp_path / "ids.npy", np.full((1, 6), 99, dtype=np.int64))  # past the 50-row embedding table
    capsys.readouterr()
    code = main(["run", str(plan), "--local", "--requests", "1", "--input-file", str(tmp_path / "ids.npy")])
    captured = capsys.readouterr()
    assert code == 1 and "node 'embed'" in captured.out + captured.err


def test_verify_fails_on_a_nan_and_exits_1(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    plan = _plan(tmp_path, "nans", "proj@a | mul..mul_1@b")
    capsys.readouterr()
    code = main(["run", str(plan), "--local", "--requests", "2", "--verify"])
    out = capsys.readouterr().out
    assert code == 1 and "verify: outputs vs the unpartitioned model: FAILED" in out and "NaN" in out


def test_run_saves_each_devices_node_times_as_a_profile_a_plan_can_use(plan_file, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from coinfer.files.plan_file import load_plan

    plan, _ = load_plan(plan_file)
    code, doc = _run(capsys, str(plan_file), "--local", "--emulate", "off", "--requests", "3",
                     "--save-profiles", str(tmp_path / "measured"))
    assert code == 0 and doc["ok"] == 3
    saved = doc["saved_profiles"]["profiles"]
    assert set(saved) == {"a", "b"}
    for device, entry in saved.items():
        profile = load_profile(entry["path"])
        ran = [n for n, d in plan.placement.items() if d == device]
        assert entry["method"] == "refined" and entry["measured_nodes"] == len(ran)  # the rest is scaled
        assert set(profile.node_time_s) == set(plan.placement)
        assert all(profile.node_time_s[n] >= 0 for n in ran) and sum(profile.node_time_s[n] for n in ran) > 0
        assert profile.settings["measured_on"] == "run" and profile.settings["requests"] == 3
    code = main(["plan", "python:tests.runtime.tiny_models:cnn", "--cluster", str(tmp_path / "three.yaml"),
                 "--solver", "ilp", "--profile", f"a={saved['a']['path']}", "--profile", f"b={saved['b']['path']}",
                 "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["time_sources"] == {"a": "refined:a", "b": "refined:b",
                                                                    "c": "flops: 1e+10 FLOP/s"}
