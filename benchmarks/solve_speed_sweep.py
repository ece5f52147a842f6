"""Solve time of every registered solver against graph size and device count.

    .venv/bin/python benchmarks/solve_speed_sweep.py [--sizes 100,1000,10000] [--devices 2,4,8,16]
        [--solvers a,b] [--runs 3] [--ilp-time-limit 30] [--json out.json]

Graphs are synthetic CNNs of realistic shape (`cnn_dag`): a stem, then stages of ResNet residual
blocks (a chain with a skip edge, projected where a stage starts) and Inception modules (four
parallel branches joined by a concat), then a head; convolution FLOPs are 2 k^2 c_in c_out
h w, light ops (batch norm, ReLU, add, pooling) a few FLOPs per element, every output an fp32
activation, and channels double while the spatial size halves at each of four stages, as in
ResNet and GoogLeNet. Larger graphs repeat more blocks per stage (a deeper network of the same
shape). Clusters (`cluster`): the phone as origin plus edge servers and clouds (k = 2: one
edge; 4: two edges and a cloud; 8: five and two; 16: twelve and three), full mesh: WiFi between
the phone and the edges, LTE to the clouds, a LAN between edges, a WAN from edges to clouds,
speeds jittered by up to 25% so devices of one tier are alike but not identical.

Each cell is the median of `--runs` runs of one solver on one problem (objective latency), in
a child process with a memory cap (`--memory-gb`) and a wall-clock cap (`--cell-timeout`). A
first run slower than `--slow-s` is not repeated (marked `1x`), and a solver that takes longer
than `--give-up-s`, runs out of memory or times out is not run on bigger cells (same or more
nodes and devices). `ilp` runs with `--ilp-time-limit` on HiGHS (the model build is extra) and
says whether it proved optimality; pareto and genetic run with their defaults. Solvers that
refuse a problem (chain-dp on a DAG, brute force beyond 200,000 assignments, pipeline-dp beyond
8 devices) say so; chain-dp is timed on the chain of the same size instead (the DAG without its
skip edges and branches). Timings are for this machine, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import random
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.errors import InfeasibleError, UserInputError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.problem import Problem
from coinfer.solve import SOLVERS
from coinfer.solve.ilp import solve_ilp

FP32 = 4
STAGES = ((56, 64), (28, 128), (14, 256), (7, 512))  # (spatial size, channels) per stage


class _Builder:
    """Appends nodes with CNN-like FLOPs, activations and parameters."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.nodes: list[Node] = []

    def add(self, op: str, inputs: tuple[str, ...], size: int, channels: int, *, k: int = 0,
            c_in: int = 0) -> str:
        jitter = self.rng.uniform(0.7, 1.3)
        elements = size * size * channels
        if op == "conv":
            flops, params = 2.0 * k * k * c_in * channels * size * size * jitter, k * k * c_in * channels * FP32
        else:  # memory-bound ops: a few FLOPs per output element; batch norm keeps scale and shift
            flops = elements * {"bn": 4, "relu": 1, "add": 1, "pool": 9, "concat": 0}[op] * jitter
            params = 2 * channels * FP32 if op == "bn" else 0
        name = f"n{len(self.nodes)}"
        self.nodes.append(Node(name, inputs, flops=flops, output_bytes=elements * FP32, param_bytes=params, op=op))
        return name

    def conv_bn_relu(self, src: str, size: int, c_in: int, c_out: int, k: int, *, relu: bool = True) -> str:
        x = self.add("bn", (self.add("conv", (src,), size, c_out, k=k, c_in=c_in),), size, c_out)
        return self.add("relu", (x,), size, c_out) if relu else x


def cnn_dag(n: int, seed: int = 0, *, chain: bool = False) -> Graph:
    """A ResNet/Inception-shaped DAG of exactly n nodes (see the module docstring); `chain`
    drops skip edges and branches (a VGG-like chain of the same ops)."""
    rng, b = random.Random(seed), _Builder(random.Random(seed + 1))
    x = b.add("pool", (b.conv_bn_relu("input", 112, 3, 64, 7),), 56, 64)
    per_stage = max(1, (n - 8) // (len(STAGES) * (3 if chain else 8)))  # nodes a block: 3 in a chain, ~8
    c_prev = 64
    for size, c in STAGES:
        for i in range(per_stage):
            if len(b.nodes) >= n:
                break
            if chain:
                x = b.conv_bn_relu(x, size, c_prev, c, 3)
            elif rng.random() < 0.7:
                x = _residual(b, x, size, c_prev, c, project=i == 0 and c != c_prev)
            else:
                x = _inception(b, x, size, c_prev, c)
            c_prev = c
    while len(b.nodes) < n:  # the head, then more blocks at the last stage if n asks for them
        plain = chain or rng.random() < 0.5
        x = b.conv_bn_relu(x, 7, c_prev, c_prev, 3) if plain else _residual(b, x, 7, c_prev, c_prev)
    nodes = b.nodes[:n]
    return Graph(f"cnn-{n}{'-chain' if chain else ''}", (GraphInput("input", TensorSpec(224 * 224 * 3 * FP32)),),
                 tuple(nodes))


def _residual(b: _Builder, x: str, size: int, c_in: int, c: int, *, project: bool = False) -> str:
    y = b.conv_bn_relu(b.conv_bn_relu(x, size, c_in, c, 3), size, c, c, 3, relu=False)
    skip = b.conv_bn_relu(x, size, c_in, c, 1, relu=False) if project or c_in != c else x
    return b.add("relu", (b.add("add", (y, skip), size, c),), size, c)


def _inception(b: _Builder, x: str, size: int, c_in: int, c: int) -> str:
    q = c // 4
    one = b.conv_bn_relu(x, size, c_in, q, 1)
    three = b.conv_bn_relu(b.conv_bn_relu(x, size, c_in, q, 1), size, q, q, 3)
    five = b.conv_bn_relu(b.conv_bn_relu(x, size, c_in, q // 2, 1), size, q // 2, q, 5)
    pool = b.conv_bn_relu(b.add("pool", (x,), size, c_in), size, c_in, q, 1)
    return b.add("concat", (one, three, five, pool), size, c)


def cluster(k: int, seed: int = 0) -> Cluster:
    """The phone plus k - 1 servers (see the module docstring)."""
    rng = random.Random(seed)
    clouds = 0 if k <= 2 else max(1, (k - 1) // 4)
    tiers = ["end"] + ["edge"] * (k - 1 - clouds) + ["cloud"] * clouds
    spec = {"end": (5e10, 3.0, 0.0), "edge": (4e11, 15.0, 0.0), "cloud": (5e12, 250.0, 8.5e-4)}
    devices = tuple(Device(f"{t}{i}" if t != "end" else "phone", t,  # type: ignore[arg-type]
                           spec[t][0] * rng.uniform(0.8, 1.25), power_w=spec[t][1], price_usd_per_s=spec[t][2],
                           origin=t == "end") for i, t in enumerate(tiers))
    net = {("end", "edge"): (50e6, 3e-3, 1.2), ("end", "cloud"): (10e6, 40e-3, 2.0), ("edge", "edge"): (1e9, 5e-4, 0),
           ("edge", "cloud"): (200e6, 15e-3, 0), ("cloud", "cloud"): (10e9, 1e-3, 0)}
    links = []
    for a in devices:
        for z in devices:
            if a is not z:
                bw, lat, power = net.get((a.tier, z.tier)) or net[(z.tier, a.tier)]
                links.append(Link(a.name, z.name, bw * rng.uniform(0.8, 1.25), latency_s=lat,
                                  power_w=power if a.tier == "end" else 0.0))
    return Cluster(f"sweep-{k}", devices, tuple(links))


@dataclass
class Cell:
    solver: str
    nodes: int
    devices: int
    seconds: list[float]
    note: str = ""
    status: str = "ok"  # ok, refused, infeasible, limit, oom, timeout, skipped
    runs: int = 3

    def text(self) -> str:
        if self.status == "skipped":
            return "skipped"
        if not self.seconds:
            return self.note
        t = statistics.median(self.seconds)
        shown = "<0.1 ms" if t < 5e-5 else f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"
        return " ".join(x for x in (shown, "1x" if len(self.seconds) < self.runs else "", self.note) if x)


def _run_cell(solver: str, n: int, k: int, args: dict[str, Any], out: Any) -> None:
    """In a child process: build the problem, time the solver, put the result on `out`."""
    limit = int(args["memory_gb"] * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    problem = make_problem(cnn_dag(n, chain=solver == "chain-dp"), cluster(k))
    seconds: list[float] = []
    note, status = "", "ok"
    try:
        for _ in range(args["runs"]):
            start = time.perf_counter()
            note = _solve(solver, problem, args["ilp_time_limit"])
            seconds.append(time.perf_counter() - start)
            if seconds[-1] > args["slow_s"]:
                break
        if solver == "chain-dp":
            note = "(chain)"
        if note.startswith("limit"):
            status = "limit"
    except UserInputError as exc:
        status, note = "refused", f"refused ({_reason(str(exc))})"
    except InfeasibleError:
        status, note = "infeasible", "infeasible"
    except MemoryError:
        status, note = "oom", f"out of memory (>{args['memory_gb']:g} GB)"
    except Exception as exc:  # a solver's own bug: report it in the cell, keep sweeping
        status, note = "error", f"error ({type(exc).__name__})"
    out.put((seconds, note, status))


def _solve(solver: str, problem: Problem, ilp_time_limit_s: float) -> str:
    if solver != "ilp":
        SOLVERS[solver](problem)
        return ""
    sol = solve_ilp(problem, time_limit_s=ilp_time_limit_s)
    return "opt" if sol.optimal else f"limit {ilp_time_limit_s:g} s, gap {sol.mip_gap:.0%}"


def _reason(message: str) -> str:
    for key, short in (("chain graph", "a DAG"), ("brute-force would cost", "over 200,000 plans"),
                       ("takes at most", "over 8 devices")):
        if key in message:
            return short
    return message.split(";")[0][:40]


def measure(solver: str, n: int, k: int, args: dict[str, Any]) -> Cell:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_run_cell, args=(solver, n, k, args, out))
    child.start()
    deadline = time.monotonic() + args["cell_timeout"]
    while True:
        try:
            seconds, note, status = out.get(timeout=1.0)
            break
        except queue.Empty:
            if not child.is_alive():  # killed (by the kernel, for memory) before it could report
                seconds, note, status = [], f"died (exit {child.exitcode}; memory?)", "oom"
                break
            if time.monotonic() > deadline:
                child.kill()
                seconds, note, status = [], f"timeout (>{args['cell_timeout']:g} s)", "timeout"
                break
    child.join()
    return Cell(solver, n, k, seconds, note, status, args["runs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--devices", default="2,4,8,16")
    parser.add_argument("--solvers", default=",".join(SOLVERS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ilp-time-limit", type=float, default=30.0)
    parser.add_argument("--slow-s", type=float, default=10.0, help="a first run slower than this is not repeated")
    parser.add_argument("--give-up-s", type=float, default=120.0, help="slower than this: skip bigger cells")
    parser.add_argument("--cell-timeout", type=float, default=600.0)
    parser.add_argument("--memory-gb", type=float, default=6.0)
    parser.add_argument("--json", help="also write every cell to this file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ks = [int(k) for k in args.devices.split(",")]
    options = vars(args)
    cells: list[Cell] = []
    for solver in args.solvers.split(","):
        given_up: list[tuple[int, int]] = []
        for n in sizes:
            for k in ks:
                if any(n >= gn and k >= gk for gn, gk in given_up):
                    cell = Cell(solver, n, k, [], status="skipped", runs=args.runs)
                else:
                    cell = measure(solver, n, k, options)
                    slow = bool(cell.seconds) and min(cell.seconds) > args.give_up_s
                    if cell.status in ("oom", "timeout") or slow:
                        given_up.append((n, k))
                cells.append(cell)
                print(f"{solver:16s} {n:6d} nodes {k:3d} devices  {cell.text()}", flush=True)
                if args.json:  # after every cell, so that a long sweep cut short keeps what it measured
                    with open(args.json, "w") as f:
                        json.dump([vars(c) for c in cells], f, indent=1)
    print()
    print(table(cells, sizes, ks))


def table(cells: list[Cell], sizes: list[int], ks: list[int]) -> str:
    """Markdown: one row per (solver, size), one column per device count."""
    lines = ["| solver | nodes | " + " | ".join(f"{k} devices" for k in ks) + " |",
             "|---|---|" + "---|" * len(ks)]
    by = {(c.solver, c.nodes, c.devices): c for c in cells}
    for solver in dict.fromkeys(c.solver for c in cells):
        for n in sizes:
            row = [by[solver, n, k].text() if (solver, n, k) in by else "" for k in ks]
            lines.append(f"| `{solver}` | {n:,} | " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
