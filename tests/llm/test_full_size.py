"""The issue's models at full size across three workers: GPT-2 (124 M parameters) and coinfer's Llama
configuration (124 M: rotary embeddings, grouped-query attention, RMSNorm), token-identical to
transformers' generate for two concurrent sessions."""

from __future__ import annotations

import numpy as np
import pytest

from coinfer.api import plan as make_plan
from coinfer.llm import capture_steps, generate_tokens
from coinfer.runtime.options import RunOptions
from tests.llm.conftest import problems

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("model", "layers"), [("hf:gpt2", "transformer.h"), ("hf:llama", "model.layers")])
def test_full_size_model_across_three_workers(model, layers, three, workers) -> None:  # type: ignore[no-untyped-def]
    steps = capture_steps(model, 16, 24)
    pre, dec = problems(steps, three)
    plan = make_plan(dec, placement=f"positions..{layers}.3@a | {layers}.4..{layers}.7@b | {layers}.8..head@c")
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, steps.vocab_size, 16, dtype=np.int64) for _ in range(2)]
    with workers.client() as client:
        report = generate_tokens(steps, plan, (pre, dec), client, workers.endpoint, RunOptions(timeout_s=120),
                                 prompts, 24, stop_at_eos=False, verify=True)
    assert report["verify"]["token_identical"], report["verify"]
    assert [len(o["tokens"]) for o in report["outputs"]] == [24, 24]
    kv = report["kv_cache_bytes"]
    assert all(kv[d]["measured_all_sessions"] == 2 * kv[d]["predicted_per_session"] > 0 for d in ("a", "b", "c"))
