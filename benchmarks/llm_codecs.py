"""fp16 and int8 on the hidden state at a cut: what they do to the logits and to 256 generated tokens.

For each model (full size, random weights from the config: no package ships a pretrained causal
LM) and codec, the hidden state leaving the middle layer (the cut of a two-device pipeline) goes
through coinfer's own codec (coinfer.runtime.codec: encode, then decode, as a worker pair does)
at every step, prefill and decode, inside Hugging Face's model. Printed:

* logits: over a `--prompt-tokens` prompt, the largest absolute change of any logit divided by the
  largest logit magnitude, and the share of positions whose top-1 token is unchanged;
* generation: `--new-tokens` greedy tokens after the prompt (end-of-sequence ignored), how many lead
  before the first difference from the unsplit model's, and the share of positions that agree;
* the bytes the codec puts on the wire for one decode step's hidden state.

The same codecs run on workers with `coinfer generate --codec int8 --verify` (docs/llm.md).

    .venv/bin/python benchmarks/llm_codecs.py [--models gpt2,llama] [--prompt-tokens 32] [--new-tokens 256]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from coinfer.capture.hf import HF_MODELS, hf_config
from coinfer.codec_model import parse_codec
from coinfer.runtime.codec import decode, encode

CODECS = ("none", "fp16", "int8", "int8-channel")


def build(model: str) -> Any:
    import transformers

    torch.manual_seed(0)
    config = hf_config(model, None, use_cache=True)
    lm = getattr(transformers, HF_MODELS[model].model)(config).eval()
    lm.generation_config.eos_token_id = None  # run on through it
    lm.generation_config.pad_token_id = 0
    return lm


def cut_layer(lm: Any) -> Any:
    layers = lm.transformer.h if hasattr(lm, "transformer") else lm.model.layers
    return layers[len(layers) // 2 - 1]


def through_codec(codec_text: str) -> Any:
    codec = parse_codec(codec_text)

    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        array = hidden.detach().numpy()
        wire = encode(array, codec)
        back = torch.from_numpy(decode(wire.meta, wire.payload, "float32", array.shape, codec).copy())
        return (back, *output[1:]) if isinstance(output, tuple) else back
    return hook


def measure(model: str, prompt_tokens: int, new_tokens: int) -> list[list[str]]:
    lm = build(model)
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, lm.config.vocab_size, (1, prompt_tokens)))
    rows = []
    with torch.no_grad():
        logits0 = lm(ids).logits
        tokens0 = lm.generate(ids, max_new_tokens=new_tokens, do_sample=False)[0, prompt_tokens:].tolist()
        for codec in CODECS:
            handle = cut_layer(lm).register_forward_hook(through_codec(codec)) if codec != "none" else None
            try:
                logits = lm(ids).logits
                tokens = lm.generate(ids, max_new_tokens=new_tokens, do_sample=False)[0, prompt_tokens:].tolist()
            finally:
                if handle is not None:
                    handle.remove()
            change = float((logits - logits0).abs().max() / logits0.abs().max())
            top1 = float((logits.argmax(-1) == logits0.argmax(-1)).float().mean())
            lead = next((i for i, (a, b) in enumerate(zip(tokens, tokens0, strict=True)) if a != b), len(tokens))
            agree = float(np.mean([a == b for a, b in zip(tokens, tokens0, strict=True)]))
            step = np.zeros((1, 1, lm.config.hidden_size), dtype=np.float32)
            wire = encode(step, parse_codec(codec)).nbytes
            rows.append([model, codec, f"{change:.2e}", f"{top1:.3f}", f"{lead}/{new_tokens}", f"{agree:.3f}",
                         f"{wire:,}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt2,llama")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    args = parser.parse_args()
    print("| model | codec at the middle cut | max logit change / max logit | top-1 unchanged (prompt) | "
          "tokens before the first difference | tokens that agree | bytes per token at the cut |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for r in measure(model, args.prompt_tokens, args.new_tokens):
            print("| " + " | ".join(r) + " |", flush=True)


if __name__ == "__main__":
    main()
