"""Tensor-parallel transformer layers: Megatron-LM's column-then-row split of attention and the MLP.

`split_layers(model, degrees, context)` replaces chosen layers of a Hugging Face GPT-2 or Llama model
by `TensorParallel` layers of K shards each (Shoeybi et al., Megatron-LM, 2019):

- attention: shard j computes heads [j h/K, (j+1) h/K) (their query, key and value columns; under
  grouped-query attention the key-value heads those queries use), keeps the KV cache of those
  heads, and multiplies its heads' output by its rows of the output projection: a partial sum of
  the layer's attention output;
- the MLP: shard j computes its columns of the up (and gate) projection and its rows of the down
  projection, again a partial sum.

The partial sums are added, with the row-split projection's bias once, and the residual (`Sum`):
the all-reduce of each half of the layer, here a reduce to the device that runs the sum (whichever
the plan says) and the broadcast of what follows it to the shards' devices, priced and run like
any other transfer. Norms stay whole. The layer becomes 2K + 4 blocks of the captured graph:
`norm`, `attn.0` .. `attn.K-1`, `attn_sum`, `norm2`, `mlp.0` .. `mlp.K-1`, `mlp_sum`
(`transformer.h.3.attn.1`, `model.layers.3.mlp_sum`), so a plan places shards like
layers, and a plan mixes pipeline stages with tensor-parallel groups by placing some layers whole
and the shards of others apart.

The shards' weights are slices of the model's own, so outputs equal the unsplit model's up to the
order of summation (the partial sums add in another order): within 1e-5 of the output's scale,
measured in tests/capture/test_tensor_parallel.py. Each shard writes its KV cache in place
(`index_copy_` at the step's positions), which makes it state of the step program, as the
unsplit layers' static cache is (coinfer.capture.causal_lm).
"""

from __future__ import annotations

import copy
import functools
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from coinfer.errors import ModelSpecError
from coinfer.graph import Graph

_SHARD = re.compile(r"(?P<half>.+\.(?:attn|mlp))\.\d+")


def split_layers(model: Any, degrees: Mapping[int, int], context: int) -> None:
    """Replace `model`'s transformer layer i by a TensorParallel layer of `degrees[i]` shards, in place."""
    family = "gpt2" if hasattr(model, "transformer") else "llama"
    layers = model.transformer.h if family == "gpt2" else model.model.layers
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    for index, degree in sorted(degrees.items()):
        if not 0 <= index < len(layers):
            raise ModelSpecError(f"tensor parallel: the model has layers 0..{len(layers) - 1}, not {index}")
        if degree < 2 or heads % degree or kv_heads % degree:
            raise ModelSpecError(f"tensor parallel: a degree of {degree} does not divide the {heads} attention heads"
                                 + (f" and {kv_heads} key-value heads" if kv_heads != heads else "")
                                 + "; give a degree of 2 or more that divides them")
        layers[index] = TensorParallel(layers[index], family, config, degree, context)


def mark_shard_groups(graph: Graph) -> Graph:
    """The block graph with each half-layer's shards (`model.layers.3.attn.0` ..) in one parallel
    group (`model.layers.3.attn`) joined by its sum (`model.layers.3.attn_sum`), so the cost model
    prices shards on different devices as running at once (coinfer.cost.parallel_groups)."""
    ids = set(graph.index)
    halves = {n.id: m["half"] for n in graph.nodes if (m := _SHARD.fullmatch(n.id)) and m["half"] + "_sum" in ids}
    if not halves:
        return graph
    nodes = tuple(replace(n, parallel_group=halves[n.id]) if n.id in halves else n for n in graph.nodes)
    return replace(graph, nodes=nodes)


class TensorParallel(nn.Module):
    """One transformer layer as K attention shards and K MLP shards (see the module docstring)."""

    # Not a block itself (coinfer.capture.blocks): its shards are, so a plan can place them apart.
    coinfer_container = True

    def __init__(self, layer: Any, family: str, config: Any, degree: int, context: int) -> None:
        super().__init__()
        self.family = family
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        if family == "gpt2":
            norm1, norm2 = layer.ln_1, layer.ln_2
            width = config.hidden_size
            w, b = layer.attn.c_attn.weight, layer.attn.c_attn.bias  # Conv1D: x @ w + b, w (in, out)
            q, k, v = ((w[:, i * width:(i + 1) * width], b[i * width:(i + 1) * width]) for i in range(3))
            o = layer.attn.c_proj.weight
            attn_bias: Any = layer.attn.c_proj.bias
            up, up_bias = layer.mlp.c_fc.weight, layer.mlp.c_fc.bias
            down = layer.mlp.c_proj.weight
            mlp_bias: Any = layer.mlp.c_proj.bias
            gate = None
            act = layer.mlp.act
        else:  # Llama: nn.Linear, x @ w.T, no biases
            norm1, norm2 = layer.input_layernorm, layer.post_attention_layernorm
            attn, mlp = layer.self_attn, layer.mlp
            q, k, v = ((p.weight.T, None) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
            o = attn.o_proj.weight.T
            attn_bias = mlp_bias = None
            up, up_bias, gate, down = mlp.up_proj.weight.T, None, mlp.gate_proj.weight.T, mlp.down_proj.weight.T
            act = mlp.act_fn
        per, kv_per = heads // degree, kv_heads // degree
        inner = up.shape[1] // degree
        self.norm = Norm(norm1)
        self.attn = nn.ModuleList(
            AttentionShard(_cols(q, j, per * head_dim), _cols(k, j, kv_per * head_dim), _cols(v, j, kv_per * head_dim),
                           o[j * per * head_dim:(j + 1) * per * head_dim, :], per, kv_per, head_dim, context,
                           rotary=family == "llama")
            for j in range(degree))
        self.mlp = nn.ModuleList(
            MlpShard(_cols((up, up_bias), j, inner), None if gate is None else _cols((gate, None), j, inner)[0],
                     down[j * inner:(j + 1) * inner, :], act)
            for j in range(degree))
        self.attn_sum = Sum(attn_bias)
        self.norm2 = Norm(norm2)
        self.mlp_sum = Sum(mlp_bias)

    def forward(self, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        if self.family == "gpt2":  # GPT2Model calls block(hidden, cache, causal_mask, encoder_states, ...)
            mask, rotary = (args[1] if len(args) > 1 else kwargs.get("attention_mask")), None
        else:
            mask, rotary = kwargs.get("attention_mask"), kwargs.get("position_embeddings")
        positions = kwargs["position_ids"]
        normed = self.norm(hidden_states)
        h = self.attn_sum(hidden_states, [s(normed, mask, positions, rotary) for s in self.attn])
        normed = self.norm2(h)
        return self.mlp_sum(h, [s(normed) for s in self.mlp])


class Norm(nn.Module):
    """One of the layer's norms, whole: its output is the broadcast to every shard of the next half."""

    coinfer_block = True

    def __init__(self, norm: Any) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Any) -> Any:
        # A view, not x: RMSNorm's x.to(float32) returns x itself when it is float32, and tracing would
        # then give the residual's later readers the cast's node, making them read this block's output.
        return self.norm(x.view_as(x))


class Sum(nn.Module):
    """The reduce of an all-reduce: the shards' partial sums, the row-split projection's bias once, and
    the residual."""

    coinfer_block = True

    def __init__(self, bias: Any) -> None:
        super().__init__()
        self.bias = _param(bias)

    def forward(self, residual: Any, parts: list[Any]) -> Any:
        total = _sum(parts)
        return residual + (total if self.bias is None else total + self.bias)


class AttentionShard(nn.Module):
    """Some heads of one attention: their projections, their KV cache, their rows of the output."""

    coinfer_block = True  # a leaf module of many ops, placed whole (coinfer.capture.blocks)

    def __init__(self, q: tuple[Any, Any], k: tuple[Any, Any], v: tuple[Any, Any], o: Any, heads: int, kv_heads: int,
                 head_dim: int, context: int, rotary: bool) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.rotary = heads, kv_heads, head_dim, rotary
        self.wq, self.bq = _param(q[0]), _param(q[1])
        self.wk, self.bk = _param(k[0]), _param(k[1])
        self.wv, self.bv = _param(v[0]), _param(v[1])
        self.wo = _param(o)
        self.register_buffer("keys", torch.zeros(1, kv_heads, context, head_dim, dtype=o.dtype), persistent=False)
        self.register_buffer("values", torch.zeros(1, kv_heads, context, head_dim, dtype=o.dtype), persistent=False)

    def forward(self, x: Any, mask: Any, position_ids: Any, rotary: Any) -> Any:
        tokens = x.shape[1]
        positions = position_ids[0]
        q = _project(x, self.wq, self.bq).view(1, tokens, self.heads, self.head_dim).transpose(1, 2)
        k = _project(x, self.wk, self.bk).view(1, tokens, self.kv_heads, self.head_dim).transpose(1, 2)
        v = _project(x, self.wv, self.bv).view(1, tokens, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.rotary:
            from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

            q, k = apply_rotary_pos_emb(q, k, *rotary)
        keys: Any = self.keys
        values: Any = self.values
        keys.index_copy_(2, positions, k)
        values.index_copy_(2, positions, v)
        if self.heads != self.kv_heads:  # grouped-query attention: each key-value head serves a run of queries
            keys = keys.repeat_interleave(self.heads // self.kv_heads, dim=1)
            values = values.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = torch.nn.functional.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, is_causal=mask is None and tokens > 1, scale=1 / math.sqrt(self.head_dim))
        return out.transpose(1, 2).reshape(1, tokens, self.heads * self.head_dim) @ self.wo


class MlpShard(nn.Module):
    """Some columns of the MLP's up (and gate) projection and the matching rows of its down projection."""

    coinfer_block = True

    def __init__(self, up: tuple[Any, Any], gate: Any, down: Any, act: Any) -> None:
        super().__init__()
        self.wu, self.bu = _param(up[0]), _param(up[1])
        self.wg = _param(gate)
        self.wd = _param(down)
        self.act = copy.deepcopy(act)  # each shard its own: a module under two paths confuses export's module names

    def forward(self, x: Any) -> Any:
        up = _project(x, self.wu, self.bu)
        inner = self.act(x @ self.wg) * up if self.wg is not None else self.act(up)
        return inner @ self.wd


def _cols(pair: tuple[Any, Any], j: int, width: int) -> tuple[Any, Any]:
    w, b = pair
    return w[:, j * width:(j + 1) * width], None if b is None else b[j * width:(j + 1) * width]


def _param(tensor: Any) -> Any:
    return None if tensor is None else nn.Parameter(tensor.detach().contiguous().clone())


def _project(x: Any, w: Any, b: Any) -> Any:
    return x @ w if b is None else x @ w + b


def _sum(parts: list[Any]) -> Any:
    return functools.reduce(operator.add, parts)
