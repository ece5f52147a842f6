"""`coinfer generate` from the command line: a run that verifies itself, a saved plan, clear errors."""

from __future__ import annotations

import json

import pytest

from coinfer.cli import main

SPLIT = "positions..transformer.h.0@phone | transformer.h.1@edge"


@pytest.mark.slow
def test_generate_on_local_workers_is_token_identical_and_its_plan_can_be_saved(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    saved = tmp_path / "gpt2-plan.json"
    argv = ["generate", "hf:gpt2", "--layers", "2", "--cluster", "phone-edge-cloud", "--prompt-tokens", "4",
            "--max-new-tokens", "5", "--sessions", "2", "--no-eos"]
    assert main([*argv, "--plan", SPLIT + " | head@cloud", "--local", "--verify", "--json",
                 "--save-plan", str(saved)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verify"]["token_identical"] and report["sessions"] == 2
    assert [len(o["tokens"]) for o in report["outputs"]] == [5, 5]
    assert set(report["kv_cache_bytes"]) == {"phone", "edge", "cloud"}
    # the saved plan places the same graph again, and without workers only the prediction is printed
    assert main([*argv, "--plan", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "positions..transformer.h.0@phone | transformer.h.1@edge | head@cloud" in out and "per new token" in out


@pytest.mark.parametrize(("argv", "expected"), [
    (["hf:gpt2", "--prompt-tokens", "1100"], "context of 1024 positions"),
    (["hf:gpt2", "--prompt-tokens", "1000", "--max-new-tokens", "100"], "at most 25 new tokens"),
    (["hf:bert"], "causal language models"),
    (["torchvision:resnet18"], "hf: causal language models"),
    (["hf:gpt2", "--sessions", "0"], "--sessions must be at least 1"),
    (["hf:gpt2", "--prompt-ids", "1,x"], "token ids separated by commas"),
    (["hf:gpt2", "--layers", "1", "--tensor-parallel", "5"], "does not divide the 12 attention heads"),
    (["hf:gpt2", "--layers", "1", "--tensor-parallel", "2", "--weights", "missing.safetensors"], "no such file"),
    (["hf:gpt2", "--tensor-parallel", "auto", "--plan", "positions..head@phone"], "drop --plan"),
])
def test_mistakes_exit_2_with_one_message(capsys, argv, expected) -> None:  # type: ignore[no-untyped-def]
    assert main(["generate", *argv, "--cluster", "phone-edge-cloud"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
