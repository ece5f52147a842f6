"""Measure the time of every node of an ONNX graph with onnxruntime's own per-node profiler.

onnxruntime times each kernel when `SessionOptions.enable_profiling` is set and writes one JSON
event per node and run (``{"cat": "Node", "name": "<node>_kernel_time", "dur": <us>}``). Graph
optimisations are switched off so that every ONNX node of the file (a coinfer node's
`source_nodes`) runs as its own kernel: fused kernels would have no per-node time. As in
`coinfer.profile.measure`, `warmup` runs come first, then `repeats` timed runs; a node's time is
the median and its spread the interquartile range. No torch is needed; the machine rates that
`calibrate` wants are not recorded (pass them to it explicitly).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from coinfer.capture.deps import require
from coinfer.errors import ProfileError, UserInputError
from coinfer.files.graph_file import graph_digest
from coinfer.graph import Graph
from coinfer.profile.host import cpu_model, load_average, median_and_spread
from coinfer.profile.timings import Profile

_KERNEL_SUFFIX = "_kernel_time"
_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
                "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(float16)": "float16"}


def measure_onnx(model: Any, graph: Graph, *, warmup: int = 3, repeats: int = 10,
                 threads: int | None = None, seed: int = 0) -> Profile:
    """Time every node of `graph` by running the onnx.ModelProto it was captured from."""
    ort = require("onnxruntime", "measuring ONNX graphs")
    np = require("numpy", "measuring ONNX graphs")
    if warmup < 0 or repeats < 1:
        raise UserInputError(f"need warmup >= 0 and repeats >= 1; got warmup={warmup}, repeats={repeats}")
    _name_unnamed_nodes(model, graph)
    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads is not None:
            opts.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = _feeds(np, session, graph, seed)
        for _ in range(warmup + repeats):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith(_KERNEL_SUFFIX):
            per_node.setdefault(e["name"][: -len(_KERNEL_SUFFIX)], []).append(1e-6 * float(e["dur"]))
    runs = {name: durations[-repeats:] for name, durations in per_node.items()}
    # onnxruntime turns Constant nodes into initializers when it loads the model, even with graph
    # optimisations off, so they never run: their time is zero.
    constants = {node.name for node in model.graph.node if node.op_type == "Constant"}
    runs.update({name: [0.0] * repeats for name in constants if name not in runs})
    missing = sorted({s for n in graph.nodes for s in (n.source_nodes or (n.id,))} - set(runs))
    if missing:
        raise ProfileError(f"onnxruntime reported no time for ONNX nodes {missing[:5]}; the graph was "
                           "captured from another file: re-capture it")
    samples = {n.id: [sum(runs[s][k] for s in (n.source_nodes or (n.id,))) for k in range(repeats)]
               for n in graph.nodes}
    summary = {nid: median_and_spread(v) for nid, v in samples.items()}
    settings: dict[str, object] = {
        "onnxruntime_version": ort.__version__, "cpu_model": cpu_model(),
        "threads": opts.intra_op_num_threads, "warmup": warmup, "repeats": repeats, "seed": seed,
        "load_average_1min": load,
    }
    return Profile(graph.name, graph_digest(graph), "local", "measured",
                   {k: m for k, (m, _) in summary.items()}, {k: s for k, (_, s) in summary.items()}, settings)


def _name_unnamed_nodes(model: Any, graph: Graph) -> None:
    """Give unnamed ONNX nodes the ids capture gave them (in file order), so that the profiler's
    event names match `source_nodes`."""
    onnx_nodes = list(model.graph.node)
    if len(onnx_nodes) != len(graph.nodes):
        raise ProfileError(f"the ONNX model has {len(onnx_nodes)} nodes but graph {graph.name} has "
                           f"{len(graph.nodes)}; measure the op-granularity graph captured from this file")
    for onnx_node, node in zip(onnx_nodes, graph.nodes, strict=True):
        if not onnx_node.name:
            onnx_node.name = (node.source_nodes or (node.id,))[0]


def _feeds(np: Any, session: Any, graph: Graph, seed: int) -> dict[str, Any]:
    """Random inputs shaped like the graph's inputs (symbolic dimensions as 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for k, arg in enumerate(session.get_inputs()):
        known = graph.inputs[k].spec.shape if k < len(graph.inputs) else None
        shape = known or tuple(d if isinstance(d, int) else 1 for d in arg.shape)
        dtype = _NUMPY_TYPES.get(arg.type, "float32")
        if dtype.startswith("float"):
            feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[arg.name] = rng.integers(0, 2 if dtype == "bool" else 100, shape).astype(dtype)
    return feeds
