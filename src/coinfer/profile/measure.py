"""Measure the time of every node on this machine (the only profile module importing torch).

`measure_program` runs a `torch.export.ExportedProgram` node by node through an fx interpreter
with real tensors shaped like the graph's inputs, timing each fx node with `time.perf_counter`:
`warmup` whole runs first (allocator, oneDNN primitive caches and CPU clocks settle), then
`repeats` timed runs. A coinfer node's sample in one run is the sum of the times of the fx nodes it
stands for (`Node.source_nodes`); its time is the median over runs and its spread the interquartile
range. The thread count is fixed for the whole measurement and recorded, with the torch version, the
CPU model and the machine's rates (`measure_machine`), in `Profile.settings`.

Timing node by node includes the interpreter's per-node cost (a few microseconds), the same cost a
runtime executing fx stages pays; `measure_machine` measures it as `node_overhead_s` so that the
roofline can add it back.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coinfer.capture.deps import require
from coinfer.errors import ProfileError, UserInputError
from coinfer.files.graph_file import graph_digest
from coinfer.graph import Graph, TensorSpec
from coinfer.profile.cache import load_cached, store
from coinfer.profile.host import cpu_model, load_average, median_and_spread
from coinfer.profile.timings import Profile

torch = require("torch", "measuring node times")

log = logging.getLogger(__name__)
_TIMED_OPS = ("call_function", "call_method", "call_module")


@dataclass(frozen=True)
class MachineRates:
    """Microbenchmarked rates of this machine: fp32 GEMM FLOP/s, large-copy bytes/s, per-node cost."""

    peak_flops_per_s: float
    memory_bandwidth_bytes_per_s: float
    node_overhead_s: float


class _TimingInterpreter(torch.fx.Interpreter):  # type: ignore[misc,name-defined]  # torch via require()
    """Runs an fx graph and records the wall time of each computing node of the last run."""

    def __init__(self, module: Any) -> None:
        super().__init__(module, garbage_collect_values=True)
        self.times_s: dict[str, float] = {}

    def run_node(self, n: Any) -> Any:
        if n.op not in _TIMED_OPS:
            return super().run_node(n)
        start = time.perf_counter()
        result = super().run_node(n)
        self.times_s[n.name] = time.perf_counter() - start
        return result


@contextmanager
def _threads(threads: int | None) -> Iterator[int]:
    """Fix torch's intra-op thread count for the block (restored after), yielding the count used."""
    before = torch.get_num_threads()
    used = threads if threads is not None else before
    if used < 1:
        raise UserInputError(f"threads must be at least 1; got {used}")
    torch.set_num_threads(used)
    try:
        yield used
    finally:
        torch.set_num_threads(before)


def measure_program(program: Any, graph: Graph, *, warmup: int = 3, repeats: int = 10,
                    threads: int | None = None, seed: int | None = None) -> Profile:
    """Time every node of `graph` by running `program` (its ExportedProgram) on this machine."""
    if warmup < 0 or repeats < 1:
        raise UserInputError(f"need warmup >= 0 and repeats >= 1; got warmup={warmup}, repeats={repeats}")
    fx_names = {n.name for n in program.graph.nodes}
    members = {n.id: n.source_nodes or (n.id,) for n in graph.nodes}
    unknown = sorted({s for srcs in members.values() for s in srcs} - fx_names)
    if unknown:
        raise ProfileError(
            f"graph {graph.name} names fx nodes the program does not have ({unknown[:5]}...); the graph "
            "was captured from another program: re-capture it or rebuild the program from graph.source"
        )
    seed = seed if seed is not None else (graph.source.seed if graph.source else 0)
    args = _program_args(program, graph, seed)
    load = load_average()
    with _threads(threads) as used, torch.inference_mode():
        interp = _TimingInterpreter(program.graph_module)
        for _ in range(warmup):
            interp.run(*args)
        runs: list[dict[str, float]] = []
        for _ in range(repeats):
            interp.times_s = {}
            interp.run(*args)
            runs.append(interp.times_s)
        rates = measure_machine(used)
    samples = {nid: [sum(run.get(s, 0.0) for s in srcs) for run in runs] for nid, srcs in members.items()}
    summary = {nid: median_and_spread(v) for nid, v in samples.items()}
    settings: dict[str, object] = {
        "torch_version": torch.__version__, "cpu_model": cpu_model(), "threads": used,
        "warmup": warmup, "repeats": repeats, "seed": seed,
        "peak_flops_per_s": rates.peak_flops_per_s,
        "memory_bandwidth_bytes_per_s": rates.memory_bandwidth_bytes_per_s,
        "node_overhead_s": rates.node_overhead_s,
        "load_average_1min": load,
    }
    return Profile(graph.name, graph_digest(graph), "local", "measured",
                   {k: m for k, (m, _) in summary.items()}, {k: iqr for k, (_, iqr) in summary.items()},
                   settings)


def measure(graph: Graph, **kw: Any) -> Profile:
    """Rebuild the program `graph` was captured from (`graph.source`) and measure it here."""
    if graph.source is None:
        raise UserInputError(
            f"graph {graph.name} has no 'source' (it was written by hand), so there is no model to run; "
            "capture the model with coinfer.capture, or predict times with coinfer.profile.analytic"
        )
    if graph.source.spec.startswith("onnx:"):
        from coinfer.capture import load_onnx
        from coinfer.profile.measure_onnx import measure_onnx

        return measure_onnx(load_onnx(graph.source), graph, **kw)
    from coinfer.capture import load_program

    return measure_program(load_program(graph.source), graph, **kw)


def _program_args(program: Any, graph: Graph, seed: int) -> list[Any]:
    """Placeholder values in order: lifted parameters, buffers and constants, then user inputs."""
    from torch.export.graph_signature import InputKind

    state: Mapping[str, Any] = {**program.state_dict, **program.constants}
    user_specs = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    given = {gi.name: gi.spec for gi in graph.inputs}
    generator = torch.Generator().manual_seed(seed)
    users: dict[str, Any] = {}
    for k, spec in enumerate(user_specs):
        name = spec.arg.name
        tensor_spec = given.get(name) or (graph.inputs[k].spec if k < len(graph.inputs) else None)
        users[name] = _example(name, tensor_spec, placeholders[name].meta.get("val"), generator)
    return [users[s.arg.name] if s.kind == InputKind.USER_INPUT else state[s.target]
            for s in program.graph_signature.input_specs]


def _example(name: str, spec: TensorSpec | None, fake: Any, generator: Any) -> Any:
    """A real tensor for one model input: random floats, small random ids, all-ones masks."""
    if spec is not None and spec.shape is not None and spec.dtype is not None:
        shape, dtype = spec.shape, getattr(torch, spec.dtype.removeprefix("torch."))
    elif fake is not None:
        shape, dtype = tuple(fake.shape), fake.dtype
    else:
        raise ProfileError(f"input {name!r} has no known shape; re-capture the graph with a recorded input")
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator, dtype=dtype)
    if dtype == torch.bool or "mask" in name:
        return torch.ones(shape, dtype=dtype)
    # Token ids: small ids exist in every vocabulary; the cost of a lookup does not depend on the id.
    return torch.randint(0, 100, shape, generator=generator, dtype=dtype)


def measure_machine(threads: int | None = None) -> MachineRates:
    """GEMM peak, large-copy bandwidth and per-node interpreter cost of this machine (about 1 s)."""
    with _threads(threads), torch.inference_mode():
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        gemm_s = _best_of(lambda: torch.mm(a, b), 7)
        # 64 MiB per side: far larger than any last-level cache, so this is DRAM bandwidth.
        src = torch.ones(16 * 1024 * 1024)
        dst = torch.empty_like(src)
        copy_s = _best_of(lambda: dst.copy_(src), 7)
        overhead_s = _node_overhead_s()
    return MachineRates(2.0 * n**3 / gemm_s, 2.0 * src.numel() * src.element_size() / copy_s, overhead_s)


def _best_of(fn: Any, runs: int) -> float:
    fn()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _node_overhead_s() -> float:
    """Median time the timing interpreter reports for a node doing no work (a 1-element view)."""
    fx = torch.fx
    g = fx.Graph()
    value = g.placeholder("x")
    for _ in range(64):
        value = g.call_function(torch.ops.aten.view.default, (value, [1]))
    g.output(value)
    interp = _TimingInterpreter(fx.GraphModule(torch.nn.Module(), g))
    x = torch.zeros(1)
    samples: list[float] = []
    for _ in range(5):
        interp.times_s = {}
        interp.run(x)
        samples.extend(interp.times_s.values())
    return statistics.median(samples)


def measure_cached(graph: Graph, cache_dir: str | Path, *, warmup: int = 3, repeats: int = 10,
                   threads: int | None = None) -> Profile:
    """`measure`, but return the profile cached under `cache_dir` when one with the same graph,
    thread count, warm-up and repeat counts, torch version and CPU model exists."""
    key = {"threads": threads if threads is not None else torch.get_num_threads(), "warmup": warmup,
           "repeats": repeats, "torch_version": torch.__version__, "cpu_model": cpu_model()}
    hit = load_cached(cache_dir, graph_digest(graph), "local", key)
    if hit is not None:
        return hit
    profile = measure(graph, warmup=warmup, repeats=repeats, threads=key["threads"])
    store(cache_dir, profile)
    return profile
