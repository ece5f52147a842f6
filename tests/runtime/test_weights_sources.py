"""Trained weights for every kind of model source, shipped to workers that have no model files (slow tier).

For each source a state dict different from the seed's is saved, captured with the model, cut into
four stages over three workers started in an empty directory, and run: the outputs must equal the
user's model holding those weights (bit for bit in PyTorch; to the last bit's rounding in
onnxruntime, whose fusions a cut can separate), and differ from the seed's model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
safetensors_torch = pytest.importorskip("safetensors.torch")

from benchmarks._cuts import hopping_plan  # noqa: E402
from coinfer.api import make_problem  # noqa: E402
from coinfer.capture import capture  # noqa: E402
from coinfer.capture.weights import with_weights  # noqa: E402
from coinfer.files.cluster_file import cluster_from_dict  # noqa: E402
from coinfer.runtime.client import Outcome  # noqa: E402
from coinfer.runtime.local import LocalWorkers  # noqa: E402
from coinfer.runtime.reference import example_inputs, reference_outputs  # noqa: E402
from coinfer.runtime.run import RunOptions, run_plan  # noqa: E402
from tests.runtime.conftest import DEVICES, THREE  # noqa: E402

pytestmark = pytest.mark.slow


def _perturbed(state: dict[str, Any], seed: int = 5) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    return {k: (v + 0.05 * torch.randn(v.shape, generator=generator, dtype=v.dtype)).contiguous()
            if v.is_floating_point() else v.contiguous() for k, v in state.items()}


def _torchvision(tmp: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    import torchvision

    torch.manual_seed(0)
    return "torchvision:resnet18", {}, torchvision.models.resnet18().state_dict()


def _hf(tmp: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    from coinfer.capture.api import build_model

    graph = capture("hf:gpt2", layers=2, seq_len=16)
    assert graph.source is not None
    return "hf:gpt2", {"layers": 2, "seq_len": 16}, build_model(graph.source)[0].state_dict()


def _export(tmp: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small().eval()
    path = tmp / "mobilenet.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 224, 224),), strict=False), str(path))
    return f"export:{path}", {}, model.state_dict()


def _onnx(tmp: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    import onnx
    import torchvision

    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    path = tmp / "resnet18.onnx"
    torch.onnx.export(torchvision.models.resnet18().eval(), (torch.randn(1, 3, 224, 224),), str(path), dynamo=True)
    model = onnx.load(str(path))
    return f"onnx:{path}", {}, {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy())
                                for t in model.graph.initializer}


SOURCES: dict[str, Callable[[Path], tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "torchvision": _torchvision, "hf": _hf, "export": _export, "onnx": _onnx}


@pytest.fixture(scope="module")
def bare_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWorkers]:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("PYTHONPATH", raising=False)
        with LocalWorkers(DEVICES, cwd=tmp_path_factory.mktemp("nothing-here")) as running:
            yield running


@pytest.mark.parametrize("source", list(SOURCES))
def test_trained_weights_of_every_source_run_bit_identical(source: str, bare_workers: LocalWorkers,
                                                           tmp_path: Path) -> None:
    spec, options, seed_state = SOURCES[source](tmp_path)
    weights = tmp_path / "trained.safetensors"
    safetensors_torch.save_file(_perturbed(seed_state), str(weights))
    graph = capture(spec, weights=str(weights), **options)
    problem = make_problem(graph, cluster_from_dict(THREE, "three.yaml"))
    x = example_inputs(graph, seed=1)
    outputs: list[Outcome] = []
    with bare_workers.client(timeout_s=60) as client:
        report = run_plan(hopping_plan(graph), problem, client, bare_workers.endpoint,
                          RunOptions(requests=1, verify=True, shaping="none", timeout_s=120,
                                     plan_version=1 + list(SOURCES).index(source)), x, on_done=outputs.append)
    summary = {k: report.get(k) for k in ("max_abs_err", "output_scale", "verify_problems", "errors")}
    assert report["ok"] == 1 and report["verified"] and report["output_scale"] > 0, summary
    # onnxruntime fuses ops of the whole model that a cut separates (Conv with its Relu), so an ONNX
    # model may differ from the unpartitioned one in the last bit; PyTorch runs the same kernels
    exact = source != "onnx"
    assert report["bit_identical"] if exact else report["max_abs_err"] <= 1e-6 * report["output_scale"], summary
    trained = reference_outputs(graph, x)
    seed = reference_outputs(with_weights(graph, None), x)
    for name, value in trained.items():
        got = outputs[0].outputs[name]
        assert np.array_equal(got, value) if exact else np.allclose(got, value, rtol=0, atol=1e-6 * np.abs(value).max())
    assert any(not np.allclose(trained[k], seed[k], atol=1e-4) for k in trained), "the weights changed nothing"
