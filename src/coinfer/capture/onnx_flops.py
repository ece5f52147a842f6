"""FLOPs of ONNX operators, in torch's FlopCounterMode convention.

FlopCounterMode counts only matmul-like ops, at 2 FLOPs per multiply-accumulate, and ignores bias
additions; everything else counts 0. The formulas below follow it exactly, so an ONNX export of a
model and the model itself report the same total (tests/capture checks this):

    Conv           2 * prod(Y.shape) * prod(W.shape[1:])        W = (C_out, C_in/group, k1, k2, ...)
    ConvTranspose  2 * N * prod(X.shape[2:]) * prod(W.shape)    W = (C_in, C_out/group, k1, ...);
                   torch counts the transposed conv per *input* position
    Gemm           2 * M * N * K                                 (Y = M x N; the C term is free)
    MatMul         2 * prod(Y.shape) * K                         K = A.shape[-1], batch broadcast
    BatchNormalization, LayerNormalization, Softmax, pooling, element-wise, reductions, shape
    and data-movement ops: 0 (FlopCounterMode counts none of them).

Operators in neither list (Einsum, Attention, control flow ...) also count 0, and the caller logs
them once so the user knows the total may be low.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

Shape = tuple[int, ...]

ELEMENTWISE_OPS = (
    "Abs", "Acos", "Add", "And", "Asin", "Atan", "BitShift", "Ceil", "Celu", "Clip", "Cos", "Cosh",
    "Div", "Elu", "Equal", "Erf", "Exp", "Floor", "Gelu", "Greater", "GreaterOrEqual",
    "HardSigmoid", "HardSwish", "IsInf", "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log", "Max",
    "Mean", "Min", "Mish", "Mod", "Mul", "Neg", "Not", "Or", "PRelu", "Pow", "Reciprocal", "Relu",
    "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt",
    "Sub", "Sum", "Tan", "Tanh", "Where", "Xor",
)
NORMALISATION_OPS = (
    "BatchNormalization", "GroupNormalization", "InstanceNormalization", "LRN",
    "LayerNormalization", "LpNormalization", "RMSNormalization", "Softmax", "LogSoftmax", "Hardmax",
)
POOLING_AND_REDUCTION_OPS = (
    "AveragePool", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "LpPool", "MaxPool",
    "MaxRoiPool", "ArgMax", "ArgMin", "CumSum", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "TopK",
)
DATA_MOVEMENT_OPS = (
    "Cast", "CastLike", "Concat", "Constant", "ConstantOfShape", "DepthToSpace", "Dropout", "Expand",
    "EyeLike", "Flatten", "Gather", "GatherElements", "GatherND", "Identity", "NonZero", "OneHot",
    "Pad", "Range", "Reshape", "Resize", "ScatterElements", "ScatterND", "Shape", "Size", "Slice",
    "SpaceToDepth", "Split", "Squeeze", "Tile", "Transpose", "Trilu", "Unsqueeze", "Upsample",
)
ZERO_FLOP_OPS = frozenset(
    ELEMENTWISE_OPS + NORMALISATION_OPS + POOLING_AND_REDUCTION_OPS + DATA_MOVEMENT_OPS
)


def onnx_node_flops(
    op_type: str, inputs: Sequence[Shape | None], outputs: Sequence[Shape | None],
    trans_a: bool = False,
) -> float | None:
    """FLOPs of one node from its input and output shapes (and Gemm's transA attribute); None
    for an operator not covered."""
    if op_type in ZERO_FLOP_OPS:
        return 0.0
    if op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return None
    x, w = (inputs[0], inputs[1]) if len(inputs) >= 2 else (None, None)
    y = outputs[0] if outputs else None
    if x is None or w is None or y is None:
        return None  # shapes unknown: shape inference could not follow the graph
    if op_type == "Conv":
        return 2.0 * prod(y) * prod(w[1:])
    if op_type == "ConvTranspose":
        return 2.0 * x[0] * prod(x[2:]) * prod(w)
    if op_type == "Gemm":
        return 2.0 * prod(y) * (x[0] if trans_a else x[1])
    return 2.0 * prod(y) * x[-1]
