"""What Hugging Face's own `generate` gives for the same model and prompts: the tokens to compare with.

The reference model is built as the step programs are (coinfer.capture.causal_lm: the same config,
`torch.manual_seed(seed)` right before the model, the user's state dict laid over it when given)
and decodes greedily (`do_sample=False`) with its default dynamic cache, in one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from coinfer.capture.deps import require
from coinfer.llm.steps import StepGraphs


def reference_model(steps: StepGraphs) -> Any:
    """The eval-mode Hugging Face causal LM the step programs were captured from."""
    from coinfer.capture.hf import HF_MODELS
    from coinfer.capture.spec import parse_spec

    torch = require("torch", "generation")
    transformers = require("transformers", "generation")
    name = parse_spec(steps.spec).target
    torch.manual_seed(steps.seed)
    model = getattr(transformers, HF_MODELS[name].model)(steps.config).eval()
    if steps.weights is not None:
        from coinfer.capture.weights import read_state_dict

        model.load_state_dict(read_state_dict(steps.weights), strict=True)
    return model


def reference_tokens(steps: StepGraphs, prompts: Sequence[np.ndarray], max_new_tokens: int,
                     stop_at_eos: bool = True) -> list[list[int]]:
    """Each prompt's greedy continuation by `model.generate` (stopping at end-of-sequence as it does,
    unless `stop_at_eos` is False)."""
    torch = require("torch", "generation")
    model: Any = reference_model(steps)
    config = model.generation_config
    config.pad_token_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    if not stop_at_eos:  # run on through it (min_new_tokens would instead forbid it, changing the argmax)
        config.eos_token_id = None
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.as_tensor(np.asarray(prompt, dtype=np.int64).reshape(1, -1))
            made = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                  attention_mask=torch.ones_like(ids))
            out.append([int(t) for t in made[0, ids.shape[1]:]])
    return out
