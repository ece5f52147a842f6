"""A small grouping of operator names into kinds that cost alike per FLOP and per byte.

The roofline keeps one efficiency per kind and the regression one linear model per kind, so the
grouping is the same for both. Kinds:

- ``conv``: convolutions (dense, depthwise, transposed); `is_grouped_conv` tells grouped and
  depthwise ones apart where the shapes are known (the sustained fits price them apart).
- ``matmul``: linear layers and matrix products.
- ``attention``: fused scaled-dot-product attention.
- ``norm``: batch/layer/group/instance norm and softmax (reductions over a dimension).
- ``elementwise``: activations and arithmetic, one output element per input element.
- ``pool``: max/average/adaptive pooling and mean reductions.
- ``data``: views, reshapes, concatenation, slicing, padding, embedding lookups: data movement
  with no arithmetic.
- ``other``: everything else, including hand-written nodes (op ``""``) and whole blocks.

Names are matched after normalisation, so ``aten.conv2d.default``, ``conv2d``, ``relu_`` and the
ONNX ``Conv`` / ``Relu`` all land in the right kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coinfer.graph import Graph, Node

OpKind = Literal["conv", "matmul", "attention", "norm", "elementwise", "pool", "data", "other"]
OP_KINDS: tuple[OpKind, ...] = ("conv", "matmul", "attention", "norm", "elementwise", "pool", "data", "other")

_GROUPS: dict[OpKind, tuple[str, ...]] = {
    "conv": ("conv1d", "conv2d", "conv3d", "convolution", "conv", "conv_transpose1d", "conv_transpose2d",
             "conv_transpose3d", "convtranspose", "_convolution"),
    "matmul": ("linear", "addmm", "mm", "bmm", "matmul", "baddbmm", "gemm", "einsum", "_addmm_activation"),
    "attention": ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu",
                  "attention", "multiheadattention"),
    "norm": ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm", "layer_norm",
             "native_layer_norm", "group_norm", "native_group_norm", "instance_norm", "softmax", "_softmax",
             "log_softmax", "_log_softmax", "batchnormalization", "layernormalization",
             "groupnormalization", "instancenormalization", "logsoftmax", "rms_norm", "_fused_rms_norm"),
    "elementwise": ("relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
                    "hardtanh", "leaky_relu", "elu", "mish", "add", "sub", "mul", "div", "pow", "sqrt",
                    "rsqrt", "exp", "log", "neg", "abs", "clamp", "clamp_min", "clamp_max", "where",
                    "dropout", "masked_fill", "erf", "reciprocal", "maximum", "minimum", "rsub",
                    "scalar_tensor", "to", "_to_copy", "type_as", "cast", "clip", "leakyrelu",
                    "hardsigmoid", "eq", "ne", "lt", "gt", "le", "ge", "logical_not", "bitwise_not",
                    "triu", "tril", "ones_like", "zeros_like", "full_like", "fill", "lift_fresh_copy"),
    "pool": ("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
             "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "max_pool2d_with_indices",
             "_adaptive_avg_pool2d", "mean", "sum", "amax", "maxpool", "averagepool", "globalaveragepool",
             "globalmaxpool", "reducemean", "reducesum"),
    "data": ("view", "reshape", "_unsafe_view", "flatten", "permute", "transpose", "t", "unsqueeze",
             "squeeze", "expand", "expand_as", "slice", "select", "contiguous", "clone", "cat", "concat",
             "stack",
             "split", "split_with_sizes", "chunk", "unbind", "getitem", "detach", "alias", "pad",
             "constant_pad_nd", "embedding", "index_select", "gather", "narrow", "repeat", "arange",
             "zeros", "ones", "full", "empty", "copy", "index", "unflatten", "identity", "shape",
             "constant", "constantofshape", "slice_scatter", "_assert_tensor_metadata", "new_ones",
             "new_zeros", "tile", "unsafe_split", "view_as"),
}
_INDEX: dict[str, OpKind] = {name: kind for kind, names in _GROUPS.items() for name in names}


def normalise(op: str) -> str:
    """`aten.conv2d.default` -> `conv2d`; `relu_` -> `relu`; `Conv` -> `conv`."""
    name = op.strip().lower()
    for prefix in ("torch.ops.", "aten.", "aten::", "onnx::", "prims.", "_operator."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    name = name.split(".")[0]
    if name.endswith("_") and not name.startswith("_"):
        name = name[:-1]  # in-place variants (relu_, add_) cost like their out-of-place twins
    return name


def op_kind(op: str) -> OpKind:
    """The kind of an operator name (``other`` for unknown names and hand-written nodes)."""
    name = normalise(op)
    if not name:
        return "other"
    return _INDEX.get(name, "other")


def is_grouped_conv(graph: Graph, node: Node) -> bool:
    """A grouped (depthwise, at the extreme) convolution: each output channel reads fewer input
    channels than the input has. Told from the shapes a captured graph records: a convolution's
    weights hold C_out x (C_in / groups) x k x k elements (+ C_out of bias), so weight elements per
    output channel below C_in mean groups > 1 (a dense 1x1 convolution has exactly C_in, plus one
    with a bias). Weights are taken as FP32; without shapes (a hand-written graph) it is False."""
    if op_kind(node.op) != "conv" or not node.outputs or not node.inputs:
        return False
    out_shape = node.outputs[0].shape
    first = graph.node(node.inputs[0]).outputs if node.inputs[0] in graph.index else \
        tuple(i.spec for i in graph.inputs if i.name == node.inputs[0])
    in_shape = first[0].shape if first else None
    if not out_shape or not in_shape or len(out_shape) < 2 or len(in_shape) < 2 or out_shape[1] <= 0:
        return False
    return node.param_bytes / 4 / out_shape[1] < in_shape[1]


@dataclass(frozen=True)
class NodeFeatures:
    """What the predictors see of a node: its kind, FLOPs and the bytes it reads and writes
    (`param_bytes`: of weights, what one run reads; coinfer.graph.Node.weight_bytes_read)."""

    node_id: str
    kind: OpKind
    flops: float
    input_bytes: int
    output_bytes: int
    param_bytes: int

    @property
    def bytes_moved(self) -> int:
        """Inputs + output + parameters: what a node must at least stream through memory once."""
        return self.input_bytes + self.output_bytes + self.param_bytes


def node_features(graph: Graph) -> tuple[NodeFeatures, ...]:
    """Features of every node in topological order (a value read twice by a node counts once)."""
    return tuple(
        NodeFeatures(
            node_id=n.id,
            kind=op_kind(n.op),
            flops=n.flops,
            input_bytes=sum(graph.tensor_bytes(src) for src in dict.fromkeys(n.inputs)),
            output_bytes=n.output_bytes,
            param_bytes=n.weight_bytes_read,
        )
        for n in graph.nodes
    )
