"""FLOPs per fx node, by running the exported program node by node under FlopCounterMode.

The node counts use the same counter as the whole eager model (`model_flops`), so their sum equals
it: FlopCounterMode counts matmul-like ops only (mm, addmm, bmm, convolution,
scaled_dot_product_attention ...) at 2 FLOPs per multiply-accumulate, and element-wise ops,
normalisations and pooling as zero. Running for real (rather than on fake tensors) also checks
that the program executes on the example inputs.

One addition to stock FlopCounterMode (checked on torch 2.14): on CPU, scaled_dot_product_attention
runs the kernel `aten._scaled_dot_product_flash_attention_for_cpu`, which has no FLOP formula, so
attention (Hugging Face `sdpa`, torchvision's nn.MultiheadAttention) would count zero. `counter()`
registers torch's own formula for the CUDA flash/efficient kernels (`sdpa_flop`: QK^T plus the
product with V, causal masks not discounted) for it, in both the per-node and the whole-model count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coinfer.capture.deps import require
from coinfer.capture.exporting import no_mha_fastpath
from coinfer.capture.tensors import tensor_spec
from coinfer.graph import TensorSpec


def program_args(program: Any, user_inputs: tuple[Any, ...]) -> list[Any]:
    """The flat placeholder values of `program.graph_module`: lifted weights, buffers, constants
    and the user inputs, in the order of the graph signature."""
    kinds = require("torch.export.graph_signature", "capture")
    it = iter(user_inputs)
    values: list[Any] = []
    for spec in program.graph_signature.input_specs:
        if spec.kind == kinds.InputKind.USER_INPUT:
            values.append(next(it))
        elif spec.target in program.state_dict:
            values.append(program.state_dict[spec.target])
        else:  # non-persistent buffers, lifted tensor constants
            values.append(program.constants[spec.target])
    return values


@dataclass(frozen=True)
class NodeRun:
    """What running the program node by node measured, keyed by fx node name."""

    flops: Mapping[str, float]
    # Specs of the real tensors produced; they stand in for node.meta["val"] where that has
    # data-dependent sizes (nonzero, boolean masks), which only the example run fixes.
    tensors: Mapping[str, TensorSpec]


def run_nodes(program: Any, user_inputs: tuple[Any, ...]) -> NodeRun:
    """Run every call_function node of `program.graph` on the inputs, counting its FLOPs."""
    torch = require("torch", "capture")
    from torch.fx import Interpreter, Node

    class Counting(Interpreter):
        def run_node(self, n: Node) -> Any:
            if n.op != "call_function":
                return super().run_node(n)
            with counter() as flop_counter:
                result = super().run_node(n)
            flops[n.name] = float(flop_counter.get_total_flops())
            spec = tensor_spec(result)
            if spec is not None:
                tensors[n.name] = spec
            return result

    flops: dict[str, float] = {}
    tensors: dict[str, TensorSpec] = {}
    with no_mha_fastpath(), torch.no_grad():
        Counting(program.graph_module).run(*program_args(program, user_inputs))
    return NodeRun(flops, tensors)


def model_flops(model: Any, inputs: tuple[Any, ...]) -> float:
    """FlopCounterMode's count for one eager forward pass (the reference the node sum must match)."""
    torch = require("torch", "capture")
    with no_mha_fastpath(), torch.no_grad(), counter() as flop_counter:
        model(*inputs)
    return float(flop_counter.get_total_flops())


def counter() -> Any:
    """FlopCounterMode(display=False) plus a formula for the CPU attention kernel (see above)."""
    torch = require("torch", "capture")
    fc = require("torch.utils.flop_counter", "capture")
    extra: dict[Any, Any] = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None and cpu_sdpa not in fc.flop_registry:
        extra[cpu_sdpa] = _cpu_sdpa_flops
    return fc.FlopCounterMode(display=False, custom_mapping=extra)


def _cpu_sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *_: Any, **__: Any) -> int:
    # FlopCounterMode passes tensor arguments as shapes; the rest (dropout, mask, scale) is unused.
    fc = require("torch.utils.flop_counter", "capture")
    return int(fc.sdpa_flop_count(query_shape, key_shape, value_shape))
