"""The command line on hand-written graphs and presets: outputs, JSON fields, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coinfer.cli import main
from tests.conftest import TOY_CHAIN, TOY_CLUSTER


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    graph, cluster = tmp_path / "g.json", tmp_path / "c.yaml"
    graph.write_text(json.dumps(TOY_CHAIN))
    cluster.write_text(yaml.safe_dump(TOY_CLUSTER))
    return graph, cluster


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_plan_json_has_the_promised_fields(files, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    out = tmp_path / "plan.json"
    code, doc = run_json(capsys, "plan", str(graph), "--cluster", str(cluster), "--placement", "a@phone | b@edge",
                         "-o", str(out))
    assert code == 0
    assert doc["plan"] == "a@phone | b@edge"
    assert doc["placement"] == {"a": "phone", "b": "edge"}
    for key in ("latency_s", "energy_j", "cost_usd", "reliability", "throughput_rps"):
        assert key in doc["predicted"]
    assert doc["predicted"]["latency_s"] == pytest.approx(3.231)  # worked out in tests/cost/test_terms.py
    assert set(doc["baselines"]) == {"origin-only (phone)", "server-only (edge)"}
    # The saved plan costs the same when read back, with nothing else given.
    code, again = run_json(capsys, "cost", str(out))
    assert code == 0 and again["predicted"]["latency_s"] == pytest.approx(3.231)
    assert [s["device"] for s in again["stages"]] == ["phone", "edge"]


def test_hand_edited_plan_file(files, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    out = tmp_path / "plan.json"
    main(["plan", str(graph), "--cluster", str(cluster), "-o", str(out)])
    doc = json.loads(out.read_text())
    doc["placement"]["b"] = "edge"
    out.write_text(json.dumps(doc))
    capsys.readouterr()
    code, again = run_json(capsys, "cost", str(out))
    assert code == 0 and again["plan"] == "a@phone | b@edge"


def test_plan_table(files, capsys) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    assert main(["plan", str(graph), "--cluster", str(cluster), "--placement", "a@phone | b@edge"]) == 0
    text = capsys.readouterr().out
    assert "latency 3231.00 ms" in text and "origin-only (phone)" in text and "server-only (edge)" in text


def test_model_that_is_neither_a_file_nor_a_spec(files, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["plan", "nonsense", "--cluster", "phone-edge-cloud"]) == 2
    assert "neither a graph JSON file nor a MODEL spec" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "expected"), [
    (["plan", "{graph}", "--cluster", "no-such-preset"], "neither a cluster file nor a preset"),
    (["plan", "{graph}", "--cluster", "{cluster}", "--placement", "a@phone"], "leaves 1 node(s) unplaced"),
    (["plan", "{graph}", "--cluster", "{cluster}", "--placement", "a@phone | b@gpu"], "unknown device 'gpu'"),
    (["plan", "{graph}", "--cluster", "{cluster}", "--objective", "speed"], "unknown objective 'speed'"),
    (["plan", "{graph}", "--cluster", "{cluster}", "--profile", "edge"], "DEVICE=profile.json"),
    (["capture", "tensorflow:resnet"], "tensorflow"),
    (["cost", "{graph}"], "placement"),
    (["profile", "{graph}", "--device", "analytic:quantum"], "quantum"),
    (["profile", "{graph}", "--device", "local"], "no 'source'"),
])
def test_user_mistakes_give_one_message(files, capsys, argv, expected) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    code = main([a.format(graph=graph, cluster=cluster) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_infeasible_memory_exits_1_and_names_the_device(files, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph, _ = files
    small = dict(TOY_CLUSTER, devices={**TOY_CLUSTER["devices"], "edge": {"flops_per_s": 1e10, "memory_bytes": 5e6}})
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(small))
    assert main(["plan", str(graph), "--cluster", str(path), "--placement", "a@phone | b@edge"]) == 1
    captured = capsys.readouterr()
    assert "device edge needs 6.0 MB but has 5.0 MB (1.0 MB short)" in captured.err


def test_presets_all_load_and_list(capsys) -> None:  # type: ignore[no-untyped-def]
    code, rows = run_json(capsys, "presets")
    names = {r["name"] for r in rows}
    assert code == 0
    assert {"phone-edge-cloud", "one-to-one", "one-to-multiple", "multiple-to-one", "multiple-to-multiple",
            "peer-to-peer", "dads-cat1", "dads-3g", "dads-4g", "dads-wifi", "pi-laptop-desktop"} <= names


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices:\n  phone: {flops_per_s: -1, origin: true}\n")
    proc = subprocess.run([sys.executable, "-m", "coinfer", "plan", str(tmp_path / "g.json"), "--cluster", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "g.json" in proc.stderr


def test_yaml_numbers_without_a_dot_are_accepted(tmp_path: Path) -> None:
    from coinfer.files.cluster_file import load_cluster

    path = tmp_path / "c.yaml"
    path.write_text("devices:\n  phone: {flops_per_s: 5e10, origin: true}\n")
    assert load_cluster(path).origin.flops_per_s == 5e10


def test_compare_runs_every_named_solver(files, capsys) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    code, doc = run_json(capsys, "compare", str(graph), "--cluster", str(cluster), "--solvers",
                         "origin-only,server-only,brute-force")
    assert code == 0
    by_name = {r["solver"]: r for r in doc["results"]}
    assert set(by_name) == {"origin-only", "server-only", "brute-force"}
    # The oracle is at least as good as both baselines (3.0 s on the phone, 1.331 s on the edge).
    assert by_name["brute-force"]["predicted"]["latency_s"] <= 1.331 + 1e-9
    assert main(["compare", str(graph), "--cluster", str(cluster), "--solvers", "magic"]) == 2
    assert "unknown solver 'magic'" in capsys.readouterr().err


def test_plot_of_every_cut(files, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    png = tmp_path / "cuts.png"
    assert main(["plan", str(graph), "--cluster", str(cluster), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adapt_compare_in_the_simulator(files, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    trace = tmp_path / "trace.txt"
    trace.write_text("0 8\n1 0.1\n30 8\n")  # the uplink collapses after 1 s, for the rest of the run
    code, doc = run_json(capsys, "adapt", str(graph), "--cluster", str(cluster), "--simulate", "--requests", "60",
                         "--trace", str(trace), "--compare", "static,partial")
    assert code == 0
    assert set(doc) == {"static", "partial"}
    for report in doc.values():
        assert report["lost"] == 0 and report["duplicated"] == 0 and report["requests"] == 60
        assert {"p50", "p95", "mean"} <= set(report["latency_s"]) and report["timeline"]["sent_s"]
        # the bytes each request sent over each link (from its hops) add up to its plan's cut
        timeline = report["timeline"]
        per_request = [sum(sizes[i] for sizes in timeline["link_bytes"].values())
                       for i in range(len(timeline["sent_s"]))]
        assert per_request == timeline["cut_bytes"]
    assert doc["static"]["switches"] == []
    assert any(doc["static"]["timeline"]["link_bytes"].values())
    # the trace itself, at its changes, for the plot: 8 Mbit/s, then 0.1 from 1 s
    (steps,) = doc["static"]["timeline"]["trace_steps"].values()
    drop = steps["time_s"].index(1.0)
    assert steps["time_s"][0] == 0.0 and steps["bits_per_s"][0] == 8e6 and steps["bits_per_s"][drop] == 0.1e6


def test_adapt_unknown_policy_is_one_message(files, capsys) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    assert main(["adapt", str(graph), "--cluster", str(cluster), "--simulate", "--policy", "nope"]) == 2
    assert "unknown policy 'nope'; policies: static" in capsys.readouterr().err


def test_adapt_policy_options_reach_the_policies(files, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    trace = tmp_path / "trace.txt"
    trace.write_text("0 8\n1 0.1\n30 8\n")
    base = ["adapt", str(graph), "--cluster", str(cluster), "--simulate", "--requests", "60", "--trace", str(trace)]
    code, default = run_json(capsys, *base, "--compare", "partial,resolve")
    assert code == 0 and default["partial"]["switches"] and default["resolve"]["switches"]
    # a 99% hysteresis keeps partial on its plan (no deadline here to waive it); resolve is untouched
    code, doc = run_json(capsys, *base, "--compare", "partial,resolve", "--policy-option", "partial.hysteresis=0.99")
    assert code == 0 and doc["partial"]["switches"] == []
    assert doc["resolve"]["switches"] == default["resolve"]["switches"]
    code, doc = run_json(capsys, *base, "--compare", "partial,resolve", "--policy-option", "hysteresis=0.99")
    assert code == 0 and doc["partial"]["switches"] == doc["resolve"]["switches"] == []
    for argv, message in ((["--policy-option", "windows=3"], "none of partial has an option 'windows'"),
                          (["--policy-option", "reap.window_runs=3"], "policy 'reap' is not run here"),
                          (["--policy-option", "window"], "write KEY=VALUE"),
                          (["--policy-option", "window=many"], "option window of policy 'partial' should be int")):
        assert main([*base, "--policy", "partial", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_plan_with_min_reliability_gets_standbys_or_says_the_best_possible(files, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph, _ = files
    cluster = tmp_path / "three.yaml"
    cluster.write_text(yaml.safe_dump({
        "devices": {"phone": {"flops_per_s": 1e9, "origin": True, "memory_bytes": 1e6},  # holds no standby
                    "edge": {"flops_per_s": 1e10, "failure_probability": 0.01},
                    "edge2": {"flops_per_s": 1e10, "failure_probability": 0.02}},
        "links": [{"between": [a, b], "bandwidth_bits_per_s": 8e6} for a, b in
                  (("phone", "edge"), ("phone", "edge2"), ("edge", "edge2"))]}))
    out = tmp_path / "plan.json"
    code, doc = run_json(capsys, "plan", str(graph), "--cluster", str(cluster), "--solver", "server-only",
                         "--min-reliability", "0.999", "-o", str(out))
    assert code == 0 and doc["plan"] == "a..b@edge+edge2"
    assert doc["predicted"]["reliability"] == pytest.approx(1 - 0.01 * 0.02)
    assert json.loads(out.read_text())["standbys"] == {"a": ["edge2"], "b": ["edge2"]}
    assert main(["cost", str(out)]) == 0
    capsys.readouterr()
    code = main(["plan", str(graph), "--cluster", str(cluster), "--solver", "server-only",
                 "--min-reliability", "0.99999"])
    assert code == 1 and "the best found is 0.9998" in capsys.readouterr().err


def test_plan_with_an_unreliability_weight_buys_standbys_and_says_it(files, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph, _ = files
    cluster = tmp_path / "three.yaml"
    cluster.write_text(yaml.safe_dump({
        "devices": {"phone": {"flops_per_s": 1e9, "origin": True, "memory_bytes": 1e6},  # runs nothing
                    "edge": {"flops_per_s": 1e10, "failure_probability": 0.01},
                    "edge2": {"flops_per_s": 1e10, "failure_probability": 0.02}},
        "links": [{"between": [a, b], "bandwidth_bits_per_s": 8e6} for a, b in
                  (("phone", "edge"), ("phone", "edge2"), ("edge", "edge2"))]}))
    code, doc = run_json(capsys, "plan", str(graph), "--cluster", str(cluster), "--solver", "ilp")
    assert code == 0 and doc["plan"] in ("a..b@edge", "a..b@edge2")  # latency alone cannot tell them apart
    code, doc = run_json(capsys, "plan", str(graph), "--cluster", str(cluster), "--solver", "ilp",
                         "--objective", "latency=1,unreliability=5")
    assert code == 0 and doc["plan"] in ("a..b@edge+edge2", "a..b@edge2+edge")  # fails only when both do
    assert doc["objective"] == "latency=1,unreliability=5"
    assert doc["predicted"]["reliability"] == pytest.approx(1 - 0.01 * 0.02)
    assert main(["plan", str(graph), "--cluster", str(cluster), "--objective", "latency=1,unreliability=-1"]) == 2
    assert "non-negative" in capsys.readouterr().err
    assert main(["plan", str(graph), "--cluster", str(cluster), "--objective", "latency=1,reliability=2"]) == 2
    assert "weigh 'unreliability'" in capsys.readouterr().err


def test_compare_prints_a_solver_that_cannot_beside_the_others_and_adds_standbys(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph = tmp_path / "eight.json"
    graph.write_text(json.dumps({"version": 1, "name": "eight", "input_bytes": 1e3, "nodes": [
        {"id": f"n{i}", "inputs": [f"n{i - 1}" if i else "input"], "flops": 1e9, "output_bytes": 1e3}
        for i in range(8)]}))
    cluster = tmp_path / "three.yaml"
    cluster.write_text(yaml.safe_dump({
        "devices": {"phone": {"flops_per_s": 1e9, "origin": True},
                    "edge": {"flops_per_s": 1e10, "failure_probability": 0.01},
                    "edge2": {"flops_per_s": 1e10, "failure_probability": 0.02}},
        "links": [{"between": [a, b], "bandwidth_bits_per_s": 8e6} for a, b in
                  (("phone", "edge"), ("phone", "edge2"), ("edge", "edge2"))]}))
    argv = ["compare", str(graph), "--cluster", str(cluster), "--solvers", "dads,ilp,brute-force",
            "--objective", "latency=1,unreliability=50"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "brute-force" in out and "cannot: brute-force would cost" in out
    code, doc = run_json(capsys, *argv)
    by_solver = {r["solver"]: r for r in doc["results"]}
    assert code == 0 and "+" in by_solver["ilp"]["plan"] and "+" in by_solver["dads"]["plan"]  # standbys
