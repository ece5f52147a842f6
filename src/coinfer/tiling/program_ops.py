"""A range of a captured model's nodes -> its `SpatialRange`: the aten ops, their windows and sizes.

A coinfer node owns fx nodes of the exported aten program (`Node.source_nodes`); this module reads
those of a range of consecutive nodes, checks that the range has one input and one output, and
describes each fx node as a spatial op:

* windows: `aten.conv2d` (also its `padding="same"/"valid"` overload) and `aten.convolution`
  (not transposed), `aten.max_pool2d` and `max_pool2d_with_indices`, `aten.avg_pool2d` (when
  border padding by zeros reproduces it: see `_avg_pool_window`);
* pointwise: batch norm in inference (`batch_norm`, `native_batch_norm`,
  `_native_batch_norm_legit_no_training` with their first result picked), activations (relu,
  hardtanh, silu, sigmoid, ...), elementwise add / mul / sub / div of two maps or a map and a
  per-channel constant, dropout in inference, adaptive pooling to the size it already has, and
  `aten.cat` along channels (dimension 1).

Anything else is refused with PlanError naming the node and the op: ops that mix positions across
the map (flatten, view, linear, matmul, mean over H and W, global or resizing adaptive pooling,
softmax, attention) and ops coinfer does not know to keep positions. The message says to tile a
range that ends before that node. Reading the program needs no torch import: fx nodes and their
schemas are read as plain objects.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from coinfer.errors import PlanError
from coinfer.graph import Graph
from coinfer.tiling.bounds import Size2d, SpatialOp, SpatialRange
from coinfer.tiling.geometry import Window, Window1d, window_output_size

Refuse = Callable[[str], PlanError]  # the error refusing one op, given the reason

CONVOLUTIONS = frozenset({"aten.conv2d", "aten.convolution"})
MAX_POOLS = frozenset({"aten.max_pool2d", "aten.max_pool2d_with_indices"})
AVG_POOLS = frozenset({"aten.avg_pool2d"})
ADAPTIVE_POOLS = frozenset({"aten.adaptive_avg_pool2d", "aten._adaptive_avg_pool2d", "aten.adaptive_max_pool2d"})
BATCH_NORMS = frozenset({"aten.batch_norm", "aten.native_batch_norm", "aten._native_batch_norm_legit_no_training"})
DROPOUTS = frozenset({"aten.dropout", "aten.feature_dropout", "aten.alpha_dropout"})
# ops whose output at a position depends only on their inputs at that position
ELEMENTWISE = frozenset(f"aten.{name}" for base in (
    "relu", "relu6", "hardtanh", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu", "elu",
    "gelu", "mish", "clamp", "clamp_min", "clamp_max", "neg", "abs", "exp", "add", "sub", "mul", "div",
) for name in (base, base + "_"))
IDENTITIES = frozenset({"aten.clone", "aten.detach", "aten.alias", "aten.contiguous"})
# results of multi-output ops: the first is the feature map, the others per-channel statistics or indices
MULTI_OUTPUT = frozenset({"aten.max_pool2d_with_indices", "aten.native_batch_norm",
                          "aten._native_batch_norm_legit_no_training", "aten.adaptive_max_pool2d"})
CHANNEL_CONCATS = frozenset({"aten.cat"})

# why a known op cannot be computed tile by tile, for the message
MIXES_POSITIONS = {
    "aten.flatten": "flattens the feature map into a vector",
    "aten.view": "reshapes the feature map", "aten.reshape": "reshapes the feature map",
    "aten._unsafe_view": "reshapes the feature map", "aten.permute": "moves the spatial axes",
    "aten.transpose": "moves the spatial axes", "aten.linear": "reads every input position for each output",
    "aten.addmm": "is a matrix product over every position", "aten.mm": "is a matrix product over every position",
    "aten.bmm": "is a matrix product over every position", "aten.matmul": "is a matrix product over every position",
    "aten.mean": "averages over positions", "aten.sum": "sums over positions", "aten.amax": "reduces over positions",
    "aten.softmax": "normalises over positions", "aten._softmax": "normalises over positions",
    "aten.scaled_dot_product_attention": "is attention, which reads every position",
    "aten.layer_norm": "normalises with statistics over positions",
    "aten.group_norm": "normalises with statistics over positions",
    "aten.instance_norm": "normalises with statistics over positions",
    "aten.upsample_nearest2d": "resizes the feature map", "aten.upsample_bilinear2d": "resizes the feature map",
}


def spatial_range(graph: Graph, first: str, last: str, program: Any | None = None) -> SpatialRange:
    """The spatial ops of the nodes `first`..`last` (inclusive, in graph order) of a captured graph.

    `program` is the graph's exported program (`coinfer.capture.load_program(graph.source)`, loaded
    here when not given). Raises PlanError for a range with several inputs or outputs, and for an
    op a tile cannot compute from part of its input (naming the node, the op and what to do).
    """
    start, stop = graph.index.get(first), graph.index.get(last)
    if start is None or stop is None:
        missing = first if start is None else last
        raise PlanError(f"graph {graph.name!r} has no node {missing!r} to start or end a tiled range")
    if stop < start:
        raise PlanError(f"a tiled range runs forward: {first!r} comes after {last!r} in graph {graph.name!r}")
    if program is None:
        if graph.source is None:
            raise PlanError(f"graph {graph.name!r} has no model source to read the range's ops from")
        from coinfer.capture.api import load_program

        program = load_program(graph.source)
    owner = {s: node.id for node in graph.nodes[start:stop + 1] for s in node.source_nodes}
    return _read(program, owner, f"{first}..{last}")


def _read(program: Any, owner: Mapping[str, str], what: str) -> SpatialRange:
    fx_nodes = [n for n in program.graph.nodes if n.name in owner]
    if not fx_nodes:
        raise PlanError(f"the range {what} owns no ops of the program; capture the model again")
    values = {n.name for n in program.graph.nodes
              if n.op == "call_function" or (n.op == "placeholder" and n.name in program.graph_signature.user_inputs)}
    outside = sorted({a.name for n in fx_nodes for a in n.all_input_nodes if a.name in values and a.name not in owner})
    if len(outside) != 1:
        raise PlanError(f"a tiled range reads one feature map, but {what} reads {len(outside)}: {outside[:4]}; "
                        "start the range where a single tensor enters it")
    leaving = [n.name for n in fx_nodes if any(u.name not in owner for u in n.users)]
    if len(leaving) != 1:
        raise PlanError(f"a tiled range outputs one feature map, but {len(leaving)} values of {what} are read after "
                        f"it ({[owner[v] for v in leaving[:4]]}); end the range where a single tensor leaves it")
    by_name = {n.name: n for n in program.graph.nodes}
    input_shape = _shape(by_name[outside[0]])
    if input_shape is None or len(input_shape) != 4:
        first = fx_nodes[0]
        raise _refuser(owner[first.name], op_label(first.target))(
            f"it reads {outside[0]!r} of shape {input_shape}, not a batch of feature maps (N, C, H, W), so there "
            "are no positions to split")
    sizes: dict[str, Size2d] = {outside[0]: (input_shape[2], input_shape[3])}
    ops = []
    for n in fx_nodes:
        op = _spatial_op(n, owner[n.name], values, sizes)
        sizes[op.name] = op.output_size
        ops.append(op)
    _check_in_place(fx_nodes, owner, values, outside[0])
    return SpatialRange(outside[0], sizes[outside[0]], tuple(ops), leaving[0])


def _spatial_op(n: Any, owner: str, values: set[str], sizes: Mapping[str, Size2d]) -> SpatialOp:
    label = op_label(n.target)
    inputs = tuple(dict.fromkeys(a.name for a in n.all_input_nodes if a.name in values))
    refuse = _refuser(owner, label)
    if label in MIXES_POSITIONS:
        raise refuse(f"it {MIXES_POSITIONS[label]}")
    if label == "getitem":
        return _item(n, owner, label, inputs, sizes, refuse)
    if label not in (CONVOLUTIONS | MAX_POOLS | AVG_POOLS | ADAPTIVE_POOLS | BATCH_NORMS | DROPOUTS | ELEMENTWISE
                     | IDENTITIES | CHANNEL_CONCATS):
        raise refuse("coinfer does not know whether it keeps positions (tiled ranges hold convolutions, pooling, "
                     "batch norm, activations, elementwise add and mul, and concatenation along channels)")
    shape = _shape(n)
    if shape is None or len(shape) != 4:
        raise refuse(f"its output of shape {shape} is not a batch of feature maps (N, C, H, W)")
    missing = [v for v in inputs if v not in sizes]
    if missing or not inputs:
        raise refuse(f"it reads {missing or 'no feature map'} of no earlier op of the range")
    in_size, out_size = sizes[inputs[0]], (shape[2], shape[3])
    args = bound_args(n)
    if label in CONVOLUTIONS | MAX_POOLS | AVG_POOLS:
        window = _window(n, label, args, refuse, in_size)
        if len(inputs) != 1:
            raise refuse(f"it reads {len(inputs)} feature maps; a window op reads one")
        return SpatialOp(n.name, owner, label, "window", inputs, in_size, out_size, window)
    if label in ADAPTIVE_POOLS and out_size != in_size:
        raise refuse(f"it pools the {in_size[0]} x {in_size[1]} map to {out_size[0]} x {out_size[1]}, mixing "
                     "positions across tiles")
    _check_pointwise(n, label, args, values, sizes, out_size, refuse)
    return SpatialOp(n.name, owner, label, "pointwise", inputs, in_size, out_size)


def _item(n: Any, owner: str, label: str, inputs: tuple[str, ...], sizes: Mapping[str, Size2d],
          refuse: Refuse) -> SpatialOp:
    producer, index = n.args[0], n.args[1]
    producer_label = op_label(producer.target) if producer.op == "call_function" else producer.op
    if producer_label not in MULTI_OUTPUT or index != 0 or producer.name not in sizes:
        raise refuse(f"it picks result {index} of {producer_label}, which is not a feature map of the range")
    size = sizes[producer.name]
    return SpatialOp(n.name, owner, label, "item", inputs, size, size)


def _window(n: Any, label: str, args: Mapping[str, Any], refuse: Refuse, in_size: Size2d) -> Window:
    if label in CONVOLUTIONS:
        weight = _shape(args.get("weight"))
        if weight is None or len(weight) != 4:
            raise refuse(f"its weight of shape {weight} is not that of a 2-D convolution")
        if args.get("transposed"):
            raise refuse("a transposed convolution spreads each input position over several outputs; "
                         "its tile bounds are not supported yet")
        kernel = (weight[2], weight[3])
        stride, dilation = _pair(args.get("stride", 1)), _pair(args.get("dilation", 1))
        pads = _conv_padding(args.get("padding", 0), kernel, dilation, stride, refuse)
        return Window(*(Window1d(kernel[i], stride[i], pads[i][0], pads[i][1], dilation[i]) for i in (0, 1)))
    kernel = _pair(args["kernel_size"])
    stride = _pair(args.get("stride") or kernel)  # an empty stride means the kernel's
    padding = _pair(args.get("padding", 0))
    dilation = _pair(args.get("dilation", 1)) if label in MAX_POOLS else (1, 1)
    ceil_mode = bool(args.get("ceil_mode", False))
    window = Window(*(Window1d(kernel[i], stride[i], padding[i], padding[i], dilation[i], ceil_mode) for i in (0, 1)))
    if label in AVG_POOLS:
        _check_avg_pool(window, args, in_size, refuse)
    return window


def _conv_padding(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int], stride: tuple[int, int],
                  refuse: Refuse) -> tuple[tuple[int, int], tuple[int, int]]:
    """(before, after) padding per axis of a convolution, from a list or the strings 'valid' / 'same'."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise refuse("padding='same' with a stride other than 1")
        # PyTorch pads 'same' with d*(f-1) in total, the odd one on the trailing side
        totals = [dilation[i] * (kernel[i] - 1) for i in (0, 1)]
        return (totals[0] // 2, totals[0] - totals[0] // 2), (totals[1] // 2, totals[1] - totals[1] // 2)
    rows, cols = _pair(padding)
    return (rows, rows), (cols, cols)


def _check_avg_pool(window: Window, args: Mapping[str, Any], in_size: Size2d, refuse: Refuse) -> None:
    """Average pooling is reproduced by zero border padding and a pool without padding only when the
    divisor is the full kernel everywhere: padding counted (count_include_pad), and no partial last
    window (ceil mode that adds one divides by the positions inside the padded map)."""
    padded = any(w.padding_before for w in (window.rows, window.cols))
    if padded and not args.get("count_include_pad", True):
        raise refuse("average pooling with padding and count_include_pad=False divides border windows by how "
                     "many real positions they hold; tiles would count their own zero padding")
    floor = [Window1d(w.kernel, w.stride, w.padding_before, w.padding_after) for w in (window.rows, window.cols)]
    for w, f, size in zip((window.rows, window.cols), floor, in_size, strict=True):
        if window_output_size(w, size) != window_output_size(f, size):
            raise refuse("average pooling in ceil mode with a partial last window divides it by fewer positions; "
                         "use ceil_mode=False or a map size the stride divides")


def _check_pointwise(n: Any, label: str, args: Mapping[str, Any], values: set[str],
                     sizes: Mapping[str, Size2d], out_size: Size2d, refuse: Refuse) -> None:
    if label in BATCH_NORMS and args.get("training"):
        raise refuse("batch norm in training mode normalises with statistics over all positions; "
                     "capture the model in eval mode")
    if label in DROPOUTS and args.get("train"):
        raise refuse("dropout in training mode draws a random mask per position; capture the model in eval mode")
    if label in CHANNEL_CONCATS:
        dim = args.get("dim", 0)
        if dim not in (1, -3):
            raise refuse(f"it concatenates along dimension {dim}; a tiled range concatenates along channels (1) only")
    for arg in n.all_input_nodes:
        shape = _shape(arg)
        if arg.name in values:
            if shape is None or len(shape) != 4 or (shape[2], shape[3]) != out_size:
                raise refuse(f"it combines the map with {arg.name!r} of shape {shape}, broadcast over positions")
        elif label in ELEMENTWISE and shape is not None and any(d != 1 for d in shape[-2:]):
            # a constant varying along H or W (a positional table) would need its own crop per tile
            raise refuse(f"it reads the constant {arg.name!r} of shape {list(shape)}, which varies with position")


def _check_in_place(fx_nodes: Sequence[Any], owner: Mapping[str, str], values: set[str], range_input: str) -> None:
    """Refuse an in-place op whose written value is read again: tiles run in-place ops on copies
    of their crops (a crop is a view that other ops still read), so a later reader must not rely on
    the write."""
    position = {n.name: i for i, n in enumerate(fx_nodes)}
    for n in fx_nodes:
        for arg in written_args(n):
            if getattr(arg, "name", None) not in values:
                continue
            later = [u for u in arg.users if u is not n and position.get(u.name, -1) > position[n.name]]
            if arg.name == range_input:  # and whoever reads the range input outside the range
                later += [u for u in arg.users if u.name not in owner]
            if later:
                raise PlanError(f"node {owner[n.name]!r} ({op_label(n.target)}) writes {arg.name!r} in place, and "
                                f"{later[0].name!r} reads it after; tile a range where in-place ops write values "
                                "read once")


def _refuser(owner: str, label: str) -> Refuse:
    def refuse(reason: str) -> PlanError:
        return PlanError(f"node {owner!r} ({label}) cannot be computed tile by tile: {reason}; tile a range that "
                         f"ends before {owner!r}")

    return refuse


# -- reading fx nodes without torch ------------------------------------------------------------


def op_label(target: Any) -> str:
    """`aten.conv2d` for the OpOverload aten.conv2d.default; `getitem` for operator.getitem."""
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "overloadpacket", None)
    return str(packet) if packet is not None else str(getattr(target, "__name__", target))


def bound_args(n: Any) -> dict[str, Any]:
    """An aten call's arguments by schema name, defaults filled in."""
    schema = getattr(n.target, "_schema", None)
    if schema is None:
        return {}
    out: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(n.args):
            out[arg.name] = n.args[i]
        elif arg.name in n.kwargs:
            out[arg.name] = n.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
    return out


def written_args(n: Any) -> list[Any]:
    """The argument values an aten call writes into (relu_'s self, add_'s self), from its schema."""
    schema = getattr(n.target, "_schema", None)
    if schema is None:
        return []
    args = bound_args(n)
    return [args[a.name] for a in schema.arguments
            if a.alias_info is not None and a.alias_info.is_write and a.name in args]


def _shape(n: Any) -> tuple[int, ...] | None:
    val = getattr(n, "meta", {}).get("val") if n is not None else None
    if isinstance(val, list | tuple):
        val = val[0] if val else None
    shape = getattr(val, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    items = [int(v) for v in value]
    return (items[0], items[0]) if len(items) == 1 else (items[0], items[1])


_PROGRAMS: dict[str, Any] = {}  # model source -> its exported program: exporting takes seconds
_RANGES: dict[tuple[str, str, str], SpatialRange] = {}
_KEEP_PROGRAMS = 2


def cached_program(graph: Graph) -> Any:
    """The exported program of a captured graph, remembered for the process (the last two models)."""
    if graph.source is None:
        raise PlanError(f"graph {graph.name!r} has no model source, so its ops' windows are unknown and no range of "
                        "it can be tiled; capture the model (coinfer capture) instead of writing the graph by hand")
    source = repr(graph.source)
    if source not in _PROGRAMS:
        from coinfer.capture.api import load_program

        while len(_PROGRAMS) >= _KEEP_PROGRAMS:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[source] = load_program(graph.source)
    return _PROGRAMS[source]


def cached_spatial_range(graph: Graph, first: str, last: str) -> SpatialRange:
    """`spatial_range` of a captured graph, the range remembered for the process: the cost model
    prices the same tiled range many times (solvers, compare)."""
    key = (repr(graph.source), first, last)
    if key not in _RANGES:
        _RANGES[key] = spatial_range(graph, first, last, cached_program(graph))
    return _RANGES[key]
