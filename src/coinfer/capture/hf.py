"""Hugging Face transformers architectures built from their config classes (random weights).

No weights are downloaded: the model is `ModelClass(Config(...))` after `torch.manual_seed(seed)`.
Each model is wrapped in a subclass whose `forward` takes one named tensor and returns a tuple of
tensors (`return_dict=False`, `use_cache=False`), so torch.export sees plain tensor outputs and the
root module keeps the Hugging Face module paths (`transformer.h.0.attn`, not `model.transformer...`).

`bert` is BertForSequenceClassification rather than BertModel: it ends in one small logits tensor
like the torchvision classifiers (BertModel returns the hidden states *and* the pooled output, so
every partition would have to ship the whole sequence back), and it keeps all of BertModel inside
it. BERT also takes an `attention_mask` input (all ones in the example), as a padded batch would;
GPT-2 takes token ids only (one causal sequence, nothing to pad).

Attention uses `sdpa`: stock FlopCounterMode misses its CPU kernel, so coinfer.capture.flops adds
the formula (the `eager` attention path would be counted through its matmuls, but is slower).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coinfer.capture.deps import require
from coinfer.capture.spec import unknown_name
from coinfer.errors import ModelSpecError

DEFAULT_SEQ_LEN = 128


@dataclass(frozen=True)
class _Arch:
    config: str
    model: str
    layers_field: str
    text: bool  # token ids input (batch, seq_len); otherwise pixel values from the config
    mask: bool = False  # also an attention_mask input (all ones: no padding in the example)
    defaults: tuple[tuple[str, Any], ...] = ()  # config fields coinfer sets (else the config class's defaults)


# LlamaConfig's defaults are Llama-2-7B's. coinfer's `hf:llama` is the same architecture (rotary
# embeddings, grouped-query attention, RMSNorm, SwiGLU) at about GPT-2's size: 12 layers of width 768,
# 12 query heads sharing 4 key-value heads, a 32,000-token vocabulary; 124 M parameters.
LLAMA_DEFAULTS = (("hidden_size", 768), ("intermediate_size", 2048), ("num_hidden_layers", 12),
                  ("num_attention_heads", 12), ("num_key_value_heads", 4), ("max_position_embeddings", 2048))

HF_MODELS = {
    "gpt2": _Arch("GPT2Config", "GPT2LMHeadModel", "n_layer", text=True),
    "llama": _Arch("LlamaConfig", "LlamaForCausalLM", "num_hidden_layers", text=True, defaults=LLAMA_DEFAULTS),
    "bert": _Arch("BertConfig", "BertForSequenceClassification", "num_hidden_layers", text=True,
                  mask=True),
    "vit": _Arch("ViTConfig", "ViTForImageClassification", "num_hidden_layers", text=False),
}
CAUSAL_LMS = ("gpt2", "llama")  # the models `coinfer generate` runs (coinfer.capture.causal_lm)


class _TextOutputs:
    def forward(self, input_ids: Any) -> Any:
        return super().forward(input_ids=input_ids, return_dict=False)  # type: ignore[misc]


class _MaskedTextOutputs:
    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        return super().forward(  # type: ignore[misc]
            input_ids=input_ids, attention_mask=attention_mask, return_dict=False
        )


class _ImageOutputs:
    def forward(self, pixel_values: Any) -> Any:
        return super().forward(pixel_values=pixel_values, return_dict=False)  # type: ignore[misc]


def is_text_model(name: str) -> bool:
    return name in HF_MODELS and HF_MODELS[name].text


def build_hf(
    name: str, input_shape: tuple[int, ...] | None, layers: int | None, seed: int
) -> tuple[Any, tuple[Any, ...]]:
    """The eval-mode model and one example input (token ids or pixel values)."""
    if name not in HF_MODELS:
        raise unknown_name("hf", name, HF_MODELS)
    torch = require("torch", "hf: models")
    transformers = require("transformers", "hf: models")
    arch = HF_MODELS[name]
    config = hf_config(name, layers)
    base = getattr(transformers, arch.model)
    mixin = _ImageOutputs if not arch.text else _MaskedTextOutputs if arch.mask else _TextOutputs
    wrapped = type(base.__name__, (mixin, base), {"__module__": base.__module__})
    torch.manual_seed(seed)
    model = wrapped(config).eval()
    gen = torch.Generator().manual_seed(seed)
    if arch.text:
        shape = input_shape or (1, DEFAULT_SEQ_LEN)
        _check_text_shape(name, shape, config)
        ids = torch.randint(0, config.vocab_size, shape, generator=gen)
        return model, ((ids, torch.ones_like(ids)) if arch.mask else (ids,))
    size = config.image_size
    shape = input_shape or (1, config.num_channels, size, size)
    return model, (torch.randn(shape, generator=gen),)


def hf_config(name: str, layers: int | None, use_cache: bool = False) -> Any:
    """The config coinfer builds hf:`name` from: sdpa attention, `layers` transformer layers if given."""
    if name not in HF_MODELS:
        raise unknown_name("hf", name, HF_MODELS)
    transformers = require("transformers", "hf: models")
    arch = HF_MODELS[name]
    fields: dict[str, Any] = {**dict(arch.defaults), "attn_implementation": "sdpa", "use_cache": use_cache}
    if layers is not None:
        if layers < 1:
            raise ModelSpecError(f"layers={layers}: give a positive number of transformer layers")
        fields[arch.layers_field] = layers
    return getattr(transformers, arch.config)(**fields)


def _check_text_shape(name: str, shape: tuple[int, ...], config: Any) -> None:
    max_len = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if len(shape) != 2 or (max_len is not None and shape[1] > max_len):
        raise ModelSpecError(
            f"hf:{name} takes token ids shaped (batch, seq_len) with seq_len <= {max_len}; "
            f"got {shape}: pass seq_len (or input_shape=(1, seq_len)) within that limit"
        )
