"""Causal language models as *step programs*: one forward over T new tokens with a static KV cache.

Generation runs a model in two kinds of step: prefill (the prompt's N tokens at positions 0..N-1)
and decode (one token at position p). Each is exported once by torch.export with Hugging Face's
`StaticCache`: per layer a key and a value tensor (1, kv heads, context, head dim) that the
attention writes in place at the step's positions (aten.index_copy_) and reads whole, masked beyond
the last written position. The shapes are static, so one decode program serves every decode step of
every session, and the runtime keeps those tensors per session on the device of their layer
(coinfer.runtime.packaging.torch_program calls them *state*: written in place, so neither a weight
nor a value). They start at zeros, as a fresh StaticCache does.

The step's inputs are `input_ids` (1, T) and `cache_position` (T,); its output is the greedy next
token (1, 1) int64, the argmax of the last position's logits, as `generate(do_sample=False)` picks
it: a decode loop needs nothing more, and 8 bytes come back instead of the vocabulary's logits.

The model is a subclass of the Hugging Face class (as coinfer.capture.hf builds them), so node ids
keep the Hugging Face module paths (`transformer.h.0`, `model.layers.3`) that the forward-pass
graph of the same model has. Built on what HF's own ExecuTorch export does (a static cache whose
`cumulative_length` is set from `cache_position` before the call); written here so that the root
module stays the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coinfer.capture.deps import require
from coinfer.capture.hf import CAUSAL_LMS, HF_MODELS, hf_config
from coinfer.capture.spec import unknown_name
from coinfer.errors import ModelSpecError


class _GreedyStep:
    """Mixed into a Hugging Face causal LM class: forward(input_ids, cache_position) -> next token."""

    coinfer_cache: Any

    def forward(self, input_ids: Any, cache_position: Any) -> Any:
        for layer in self.coinfer_cache.layers:  # the cache's length is where this step starts
            layer.cumulative_length.copy_(cache_position[0])
        outputs = super().forward(input_ids=input_ids, cache=self.coinfer_cache, use_cache=True)  # type: ignore[misc]
        return outputs.logits[:, -1, :].argmax(dim=-1, keepdim=True)


def context_limit(name: str, layers: int | None = None) -> int:
    """The longest context (prompt plus generated tokens) the model's position embeddings allow."""
    config = hf_config(name, layers)
    return int(getattr(config, "max_position_embeddings", None) or config.n_positions)


def build_step(name: str, tokens: int, context: int, layers: int | None, seed: int,
               tensor_parallel: str | None = None,
               state: Mapping[str, Any] | None = None) -> tuple[Any, tuple[Any, ...]]:
    """The step module of hf:`name` over `tokens` new tokens with a cache of `context` positions, and
    its example inputs (random prompt ids at positions 0..tokens-1). `tensor_parallel` ("K" for every
    layer, or "3:2,4-7:4" per layer) splits layers into shards (coinfer.capture.tensor_parallel).
    `state` (the user's state dict of the Hugging Face model) is loaded before the split, so that the
    shards slice the user's weights; without a split the runtime lays the state dict over the
    exported program's weights instead (coinfer.runtime.packaging.torch_program)."""
    if name not in CAUSAL_LMS:
        raise unknown_name("generation (hf: causal language models)", name, CAUSAL_LMS)
    torch = require("torch", "generation")
    transformers = require("transformers", "generation")
    limit = context_limit(name, layers)
    if not 0 < tokens <= context:
        raise ModelSpecError(f"hf:{name}: a step of {tokens} tokens does not fit a context of {context}")
    if context > limit:
        raise ModelSpecError(f"hf:{name} has a context of {limit} positions; the prompt and the new tokens "
                             f"need {context}: give fewer prompt or new tokens")
    config = hf_config(name, layers, use_cache=True)
    base = getattr(transformers, HF_MODELS[name].model)
    step_class = type(base.__name__, (_GreedyStep, base), {"__module__": base.__module__})
    torch.manual_seed(seed)  # the same weights as the forward-pass model of the same seed
    model = step_class(config).eval()
    model.coinfer_cache = _static_cache(transformers, config, context, model.dtype)
    if state is not None:
        from coinfer.capture.weights import check_state_dict

        check_state_dict(state, model.state_dict(), f"the weights of hf:{name}")
        model.load_state_dict(state, strict=True)
    if tensor_parallel:
        from coinfer.capture.tensor_parallel import split_layers

        split_layers(model, parse_tensor_parallel(tensor_parallel, config.num_hidden_layers), context)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (1, tokens), generator=gen)
    return model, (ids, torch.arange(tokens))


def _static_cache(transformers: Any, config: Any, context: int, dtype: Any) -> Any:
    cache = transformers.StaticCache(config=config, max_cache_len=context)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads  # grouped-query attention shares them
    cache.early_initialization(1, kv_heads, head_dim, dtype, "cpu")  # allocated now, not lazily (export)
    return cache


def parse_tensor_parallel(text: str, layers: int) -> dict[int, int]:
    """Layer -> degree from "K" (every layer), or "I:K", "I-J:K" items separated by commas."""
    text = str(text).strip()
    try:
        if text.isdigit():
            return dict.fromkeys(range(layers), int(text))
        out: dict[int, int] = {}
        for item in text.split(","):
            span, _, degree = item.partition(":")
            first, _, last = span.partition("-")
            out.update(dict.fromkeys(range(int(first), int(last or first) + 1), int(degree)))
        return out
    except ValueError:
        raise ModelSpecError(f"tensor parallel {text!r}: give a degree K for every layer, or LAYER:K and "
                             "FIRST-LAST:K items separated by commas, e.g. 0-5:2") from None


def canonical_tensor_parallel(text: str | None, layers: int) -> str | None:
    """The per-layer form of a tensor-parallel request ("0:2,1:2"), None when it splits nothing."""
    if not text:
        return None
    degrees = parse_tensor_parallel(text, layers)
    return ",".join(f"{i}:{k}" for i, k in sorted(degrees.items())) or None
