"""Profiling on a remote worker: every node measured there over the secure runtime, an emulated slower
device profiled as that device, and the saved profile driving a plan."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from coinfer.capture import capture
from coinfer.cli import main
from coinfer.graph import Graph
from coinfer.profile.analytic import predict
from coinfer.profile.catalog import device_spec
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.remote_profile import profile_on_worker

MODEL = "torchvision:resnet18"


@pytest.fixture(scope="module")
def graph() -> Graph:
    return capture(MODEL, granularity="block")


@pytest.fixture(scope="module")
def fast() -> Iterator[LocalWorkers]:
    with LocalWorkers(["edge"]) as running:
        yield running


@pytest.fixture(scope="module")
def slow() -> Iterator[LocalWorkers]:
    """A worker that plays a Raspberry Pi 4B: it holds every stage for the catalog's prediction."""
    with LocalWorkers(["pi"], extra_args=("--emulate", "rpi4b")) as running:
        yield running


def test_a_worker_measures_every_node_and_reports_its_host(graph: Graph, fast: LocalWorkers) -> None:
    with fast.client() as client:
        profile = profile_on_worker(graph, "edge", client, fast.endpoint, example_inputs(graph), warmup=1, repeats=3)
    assert profile.method == "measured" and profile.device == "edge"
    assert set(profile.node_time_s) == {n.id for n in graph.nodes}
    assert all(t > 0 for t in profile.node_time_s.values())  # every block of resnet18 runs ops
    assert profile.settings["measured_on"] == "worker" and profile.settings["repeats"] == 3
    assert profile.settings["cpu_model"] and profile.settings["torch_version"] and profile.settings["threads"] == 1


def test_an_emulated_device_is_profiled_as_that_device(graph: Graph, slow: LocalWorkers) -> None:
    with slow.client() as client:
        played = profile_on_worker(graph, "pi", client, slow.endpoint, example_inputs(graph), warmup=1, repeats=3)
    predicted = predict(graph, device_spec("rpi4b")).node_time_s
    assert played.settings["emulate"] == "rpi4b"
    for node, seconds in played.node_time_s.items():  # the hold, spread over the nodes as predicted
        assert seconds == pytest.approx(predicted[node], rel=0.05, abs=5e-4), node
    assert played.total_time_s == pytest.approx(sum(predicted.values()), rel=0.05)


def test_the_command_line_profile_drives_a_plan(graph: Graph, fast: LocalWorkers, slow: LocalWorkers,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for workers, device in ((fast, "edge"), (slow, "pi")):
        keys = workers.keys_dir
        assert keys is not None
        code = main(["profile", MODEL, "--granularity", "block", "--worker", f"{device}={workers.endpoint(device)}",
                     "--key", str(keys / "client.key_secret"), "--worker-keys", str(keys), "--warmup", "1",
                     "--repeats", "2", "-o", str(tmp_path / f"{device}.json"), "--json"])
        (summary,) = json.loads(capsys.readouterr().out)
        assert code == 0 and summary["device"] == device and summary["nodes"] == len(graph.nodes)
    cluster = tmp_path / "lab.yaml"
    cluster.write_text(yaml.safe_dump({
        "devices": {"pi": {"tier": "end", "device": "rpi4b", "origin": True}, "edge": {"device": "xeon-e5-2620v4"}},
        "links": [{"between": ["pi", "edge"], "bandwidth_bits_per_s": 1e8, "latency_s": 0.002}]}))
    code = main(["plan", MODEL, "--granularity", "block", "--cluster", str(cluster), "--solver", "ilp",
                 "--profile", f"edge={tmp_path / 'edge.json'}", "--profile", f"pi={tmp_path / 'pi.json'}", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["time_sources"] == {"pi": "measured:pi", "edge": "measured:edge"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--worker", "edge"], "should look like edge=10.0.0.2:5555"),
    (["--worker", "edge=127.0.0.1:1", "--device", "analytic:rpi4b"], "takes no --device"),
    (["--worker", "edge=127.0.0.1:1"], "--workers needs --key"),
])
def test_bad_worker_arguments_are_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", MODEL, "--granularity", "block", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_python_api_profiles_several_workers(graph: Graph, fast: LocalWorkers, slow: LocalWorkers) -> None:
    import coinfer

    profiles = {}
    for workers, device in ((fast, "edge"), (slow, "pi")):
        keys = workers.keys_dir
        assert keys is not None
        address = workers.endpoint(device).removeprefix("tcp://")
        profiles.update(coinfer.profile_on_workers(graph, {device: address}, key=keys / "client.key_secret",
                                                   worker_keys=keys, warmup=0, repeats=2))
    assert set(profiles) == {"edge", "pi"} and profiles["pi"].total_time_s > profiles["edge"].total_time_s
    cluster = coinfer.Cluster("lab", (coinfer.Device("pi", "end", flops_per_s=1e9, origin=True),
                                      coinfer.Device("edge", "edge", flops_per_s=1e9)),
                              (coinfer.Link("pi", "edge", 1e8), coinfer.Link("edge", "pi", 1e8)))
    problem = coinfer.make_problem(graph, cluster, profiles=profiles)
    assert problem.node_time_s["pi"] == profiles["pi"].node_time_s
    with pytest.raises(coinfer.errors.UserInputError, match="needs key="):
        coinfer.profile_on_workers(graph, {"edge": "127.0.0.1:1"})


def test_a_regression_fits_on_profiles_measured_on_a_worker(graph: Graph, slow: LocalWorkers, fast: LocalWorkers,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coinfer.profile.profile_file import save_profile

    for workers, device in ((slow, "pi"), (fast, "edge")):
        with workers.client() as client:
            profile = profile_on_worker(graph, device, client, workers.endpoint, example_inputs(graph), warmup=0,
                                        repeats=2)
        save_profile(profile, tmp_path / f"{device}.json")
    code = main(["profile", "torchvision:resnet34", "--granularity", "block", "--device", "regression",
                 "--fit-on", f"{MODEL}={tmp_path / 'pi.json'}", "-o", str(tmp_path / "r34.json"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["device"] == "regression:pi" and doc["method"] == "regression"
    # resnet34 has the blocks of resnet18 and more of them: predicted slower on the same device
    assert doc["total_time_s"] > json.loads((tmp_path / "pi.json").read_text())["nodes"]["layer1.0"]["time_s"] * 3
    code = main(["profile", "torchvision:resnet34", "--granularity", "block", "--device", "regression", "--fit-on",
                 f"{MODEL}={tmp_path / 'pi.json'},{MODEL}={tmp_path / 'edge.json'}"])
    assert code == 2 and "mixes profiles of devices edge, pi" in capsys.readouterr().err
