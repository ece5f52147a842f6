"""Large language models across devices: token generation with a KV cache on every device.

    from coinfer.llm import generate
    report = generate("hf:gpt2", "phone-edge-cloud", prompt_tokens=32, max_new_tokens=64, verify=True)

`generate` does it all on local workers (coinfer.llm.run). Its parts: `capture_steps` captures a
causal LM's prefill and decode step programs (coinfer.llm.steps); `generate_tokens` runs them on
workers, several sessions at once (coinfer.llm.generation); `reference_tokens` is Hugging Face's own
greedy `generate` on the same model (coinfer.llm.reference). `coinfer generate` is the command line
of them.
"""

from __future__ import annotations

from coinfer.llm.generation import generate_tokens, predicted_kv_bytes
from coinfer.llm.reference import reference_tokens
from coinfer.llm.run import generate
from coinfer.llm.steps import StepGraphs, capture_steps

__all__ = ["StepGraphs", "capture_steps", "generate", "generate_tokens", "predicted_kv_bytes", "reference_tokens"]
