"""The command line on real models: capture, profile (torch and ONNX) and plan end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coinfer.cli import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_capture_json_summary(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    doc = run_json(capsys, "capture", "torchvision:resnet18", "--cache-dir", str(tmp_path), "-o",
                   str(tmp_path / "g.json"))
    assert doc["nodes"] == 69 and doc["output_bytes"] == 4000
    assert doc["flops"] == pytest.approx(3.628e9, rel=1e-3) and doc["param_bytes"] > 46e6
    assert json.loads((tmp_path / "g.json").read_text())["version"] == 1


def test_profile_onnx_with_constants_and_plan_with_it(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    # The TorchScript exporter turns the flatten's shape into Constant nodes, which onnxruntime
    # folds away and never times: they must count as zero, not fail the profile.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(0),
                                torch.nn.Linear(8 * 30 * 30, 10)).eval()
    path = tmp_path / "small.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "p.json"
    doc = run_json(capsys, "profile", f"onnx:{path}", "--device", "local", "--repeats", "2", "-o", str(out), *cache)
    assert doc["method"] == "measured" and doc["total_time_s"] > 0
    assert (tmp_path / "cache" / "calibration.json").is_file()
    plan = run_json(capsys, "plan", f"onnx:{path}", "--cluster", "dads-wifi", "--profile", f"pi={out}", *cache)
    assert plan["time_sources"]["pi"] == "measured:local"
    assert plan["predicted"]["latency_s"] > 0
