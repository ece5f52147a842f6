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


HF_MODELS = {
    "gpt2": _Arch("GPT2Config", "GPT2LMHeadModel", "n_layer", text=True),
    "bert": _Arch("BertConfig", "BertForSequenceClassification", "num_hidden_layers", text=True,
                  mask=True),
    "vit": _Arch("ViTConfig", "ViTForImageClassification", "num_hidden_layers", text=False),
}


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
    overrides: dict[str, Any] = {"attn_implementation": "sdpa", "use_cache": False}
    if layers is not None:
        if layers < 1:
            raise ModelSpecError(f"layers={layers}: give a positive number of transformer layers")
        overrides[arch.layers_field] = layers
    config = getattr(transformers, arch.config)(**overrides)
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


def _check_text_shape(name: str, shape: tuple[int, ...], config: Any) -> None:
    max_len = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if len(shape) != 2 or (max_len is not None and shape[1] > max_len):
        raise ModelSpecError(
            f"hf:{name} takes token ids shaped (batch, seq_len) with seq_len <= {max_len}; "
            f"got {shape}: pass seq_len (or input_shape=(1, seq_len)) within that limit"
        )
