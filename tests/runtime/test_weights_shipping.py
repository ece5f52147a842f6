"""Weights travel with the deployment: a worker with no model files serves the user's trained model exactly.

Each worker here runs in an empty directory with no PYTHONPATH, so it cannot import the test
models: whatever it computes comes from the program and the weights the client shipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from coinfer.api import make_problem  # noqa: E402
from coinfer.capture import capture  # noqa: E402
from coinfer.capture.weights import read_state_dict, with_weights  # noqa: E402
from coinfer.errors import WeightsError, WorkerError  # noqa: E402
from coinfer.files.cluster_file import cluster_from_dict  # noqa: E402
from coinfer.plan import parse_plan  # noqa: E402
from coinfer.runtime.client import Outcome  # noqa: E402
from coinfer.runtime.local import LocalWorkers  # noqa: E402
from coinfer.runtime.reference import example_inputs, reference_outputs  # noqa: E402
from coinfer.runtime.run import RunOptions, deploy, run_plan  # noqa: E402
from tests.runtime.conftest import DEVICES, HOPPING, THREE  # noqa: E402

SPEC = "python:tests.runtime.tiny_models:cnn"


def _trained(path: Path, seed: int = 123) -> Path:
    """The seed-0 cnn's state dict moved away from its initial values, as training would (saved at `path`)."""
    from tests.runtime.tiny_models import cnn

    torch.manual_seed(0)
    model, _ = cnn()
    generator = torch.Generator().manual_seed(seed)
    state = {k: (v + 0.1 * torch.randn(v.shape, generator=generator)) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        safetensors_torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def bare_workers(tmp_path_factory: pytest.TempPathFactory) -> LocalWorkers:
    """Workers a, b, c started in an empty directory with no PYTHONPATH: no model module in reach."""
    empty = tmp_path_factory.mktemp("nothing-here")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("PYTHONPATH", raising=False)
        with LocalWorkers(DEVICES, cwd=empty) as running:
            yield running


def _problem(weights: Path | None, placement: str = HOPPING):  # type: ignore[no-untyped-def]
    graph = capture(SPEC, weights=str(weights) if weights else None)
    problem = make_problem(graph, cluster_from_dict(THREE, "three.yaml"))
    return parse_plan(placement, graph, DEVICES), problem


def test_the_workers_cannot_import_the_model(bare_workers: LocalWorkers) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([sys.executable, "-c", "import tests.runtime.tiny_models"], cwd=bare_workers.cwd, env=env,
                           capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_trained_weights_run_bit_identical_to_the_users_model(bare_workers: LocalWorkers, tmp_path: Path,
                                                              suffix: str) -> None:
    plan, problem = _problem(_trained(tmp_path / f"trained{suffix}"))
    x = example_inputs(problem.graph, seed=4)
    outputs: list[Outcome] = []
    with bare_workers.client() as client:
        report = run_plan(plan, problem, client, bare_workers.endpoint,
                          RunOptions(requests=3, verify=True, plan_version=1 if suffix == ".pt" else 2, shaping="none"),
                          x, on_done=outputs.append)
    assert report["ok"] == 3 and report["verified"] and report["bit_identical"], report
    # the user's model, not the seed's: the untrained model answers otherwise
    trained = reference_outputs(problem.graph, x)["linear"]
    seed = reference_outputs(with_weights(problem.graph, None), x)["linear"]
    assert np.array_equal(outputs[0].outputs["linear"], trained) and not np.allclose(trained, seed, atol=1e-3)


def test_weights_given_at_run_time_replace_the_plans(bare_workers: LocalWorkers, tmp_path: Path) -> None:
    plan, problem = _problem(None)
    weights = _trained(tmp_path / "late.safetensors", seed=7)
    x = example_inputs(problem.graph, seed=4)
    outputs: list[Outcome] = []
    with bare_workers.client() as client:
        report = run_plan(plan, problem, client, bare_workers.endpoint,
                          RunOptions(requests=1, verify=True, plan_version=3, shaping="none", weights=weights), x,
                          on_done=outputs.append)
    assert report["verified"] and report["bit_identical"] and report["weights"] == str(weights.resolve())
    assert np.array_equal(outputs[0].outputs["linear"],
                          reference_outputs(with_weights(problem.graph, weights), x)["linear"])


def test_a_redeploy_and_a_plan_switch_send_only_what_a_worker_lacks(bare_workers: LocalWorkers,
                                                                    tmp_path: Path) -> None:
    weights = _trained(tmp_path / "w.safetensors", seed=11)
    first, problem = _problem(weights, "stem..add@a | left..head@b")
    with bare_workers.client() as client:
        sent = {d: r["sent_weight_bytes"] for d, r in
                deploy(client, first, problem, bare_workers.endpoint, RunOptions(plan_version=10)).items()}
        assert sent["a"] > 0 and sent["b"] > 0
        again = deploy(client, first, problem, bare_workers.endpoint, RunOptions(plan_version=11))
        assert all(r["sent_weight_bytes"] == 0 for r in again.values())
        # moving `left` to a: a lacks only left's weight and bias
        moved = parse_plan("stem..left@a | right..head@b", problem.graph, DEVICES)
        after = deploy(client, moved, problem, bare_workers.endpoint, RunOptions(plan_version=12))
    left = sum(v.numel() * v.element_size() for k, v in read_state_dict(weights).items() if k.startswith("left."))
    assert after["b"]["sent_weight_bytes"] == 0
    assert left <= after["a"]["sent_weight_bytes"] < left + 2 * 4096  # two safetensors headers beside the bytes


def test_a_worker_keeps_its_blobs_across_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, problem = _problem(_trained(tmp_path / "w.safetensors"), "stem..add@a | left..head@b")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    sent = []
    for _ in range(2):
        with LocalWorkers(("a", "b"), cache_dir=tmp_path / "cache") as workers, workers.client() as client:
            replies = deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=1))
            sent.append(sum(r["sent_weight_bytes"] for r in replies.values()))
    assert sent[0] > 0 and sent[1] == 0


def test_a_worker_without_the_memory_refuses_before_loading_anything(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    plan, problem = _problem(None, "stem..add@a | left..head@b")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    with LocalWorkers(("a", "b"), extra_args=("--memory-bytes", "2000")) as workers, workers.client() as client:
        with pytest.raises(WorkerError) as refused:
            deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=1))
        blobs = [f for d in ("a", "b") for f in (workers.cache_dir / d).iterdir()]
    text = str(refused.value)
    assert "needs" in text and "of memory" in text and "available" in text and "--memory-bytes 2.0 kB" in text
    assert blobs == []  # refused before a single blob was accepted


def test_a_state_dict_that_does_not_fit_the_model_is_refused_naming_the_keys(tmp_path: Path) -> None:
    bad = tmp_path / "other.safetensors"
    safetensors_torch.save_file({"stem.weight": torch.zeros(8, 3, 3, 3), "extra.bias": torch.zeros(2)}, str(bad))
    _, problem = _problem(bad)
    from coinfer.runtime.packaging import Packager

    with pytest.raises(WeightsError, match=r"missing \d+ key\(s\): block\.0\.bias.*unexpected 1 key\(s\): extra\.bias"):
        Packager(problem.graph)


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"stem.weight": Payload()}, evil)
    with pytest.raises(WeightsError, match="weights-only"):
        read_state_dict(evil)
    assert not marker.exists()


def test_a_weights_file_changed_since_the_plan_is_refused(tmp_path: Path) -> None:
    weights = _trained(tmp_path / "w.safetensors")
    _, problem = _problem(weights)
    _trained(weights, seed=99)  # retrained in place after planning
    from coinfer.runtime.packaging import Packager

    with pytest.raises(WeightsError, match="changed since the plan was made"):
        Packager(problem.graph)
