"""MEASURED: DeepThings' work stealing against the plan's fixed tile assignment (`benchmarks/tiling.py --steal`).

What runs: Darknet-19's first 16 layers at 416 x 416 (benchmarks/tiling_models.py) as DeepThings
tiles them, a 5x5 fused grid, on local worker processes: a gateway (pi1, the origin: it scatters the
crops, gathers the tiles and computes none) and 4 tile workers, the 25 tiles given round-robin
(7, 6, 6, 6), as a static partition does. Emulated Raspberry Pi 3Bs, DeepThings' devices (each
stage held to its predicted time, links shaped in-process to 100 Mbit/s and 1 ms), as
benchmarks/tiling_runs.py does with Pi 4Bs; a Pi 4B's tiles, with the grid's fourfold recomputed
overlap, take four workers longer to compute on this machine's 2 cores than a Pi 4B would.

The plan is made believing every tile worker is a Pi 3B. Then some run slower than that: their
node times are multiplied by FACTOR in the problem the run is emulated under (a background job
taking part of the device; the emulation holds their stages that much longer), while the plan's
assignment stays. Each case runs twice on fresh workers, the tiles fixed (`RunOptions()`) and
stolen (`RunOptions(steal=True)`, coinfer.runtime.stealing). Latency: the median of REQUESTS
requests, one at a time, every output verified against the unpartitioned model. Beside them, the
cost model's latency of the plan's tiles and of tiles assigned knowing the real speeds (each to
the device that finishes it first, `solve.tiled_ranges.earliest_finish`): the static assignment
stealing approaches without being told.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from coinfer.api import make_problem
from coinfer.cluster import Cluster
from coinfer.cost import evaluate
from coinfer.graph import Graph
from coinfer.plan import parse_plan
from coinfer.problem import Problem
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, run_plan
from coinfer.solve.tiled_ranges import earliest_finish

REQUESTS = 5
GRID = (5, 5)
TILE_WORKERS = 4
CASES: tuple[tuple[str, Mapping[int, float]], ...] = (  # (label, tile worker index -> slowdown factor)
    ("as planned", {}),
    ("one worker 2x slower", {3: 2.0}),
    ("one worker 4x slower", {3: 4.0}),
    ("two workers 2x slower", {2: 2.0, 3: 2.0}),
)


def slowed(problem: Problem, factors: Mapping[str, float]) -> Problem:
    """`problem` with the named devices' node times multiplied: what those devices really take."""
    times = {d: ({n: t * factors[d] for n, t in ts.items()} if d in factors else dict(ts))
             for d, ts in problem.node_time_s.items()}
    return replace(problem, node_time_s=times)


def measure(graph: Graph, problem: Problem, text: str, devices: Sequence[str], steal: bool) -> tuple[float, int, str]:
    """p50 latency, tiles stolen, and the verification verdict of one run on fresh workers."""
    plan = parse_plan(text, graph, problem.cluster.device_names)
    options = RunOptions(requests=REQUESTS, warmup=1, emulate=True, shaping="inproc", verify=True, timeout_s=300,
                         recover=False, steal=steal)
    with tempfile.TemporaryDirectory() as empty, LocalWorkers(devices, cwd=Path(empty)) as workers, \
            workers.client(timeout_s=120) as client:
        report = run_plan(plan, problem, client, workers.endpoint, options, example_inputs(graph, seed=2))
    if report["ok"] != REQUESTS:
        raise SystemExit(f"{text}: {report['failed']} of {REQUESTS} requests failed: {report['errors'][:1]}")
    verdict = "bit-identical" if report.get("bit_identical") else (
        f"{report['max_abs_err'] / report['output_scale']:.1e} of scale" if report.get("verified") else "NOT EQUAL")
    stolen = report["stealing"]["stolen_tiles"] if steal else 0
    return float(report["latency_s"]["p50"]), stolen, verdict


def stealing_table(graph: Graph, cluster_of: Callable[[int], Cluster], first: str, last: str) -> str:
    """Fixed against stolen tiles, per case of CASES (the module docstring)."""
    cluster = cluster_of(1 + TILE_WORKERS)
    names = cluster.device_names
    gateway, tile_workers = names[0], names[1:1 + TILE_WORKERS]
    tiles = GRID[0] * GRID[1]
    text = (f"{first}..{last}@tiles[{GRID[0]}x{GRID[1]},fused]"
            f"({','.join(tile_workers[i % TILE_WORKERS] for i in range(tiles))})>{gateway}")
    planned = make_problem(graph, cluster)
    rows = []
    for label, by_index in CASES:
        actual = slowed(planned, {tile_workers[i]: f for i, f in by_index.items()})
        predicted_s = evaluate(parse_plan(text, graph, names), actual).latency_s
        knowing = earliest_finish(actual, graph.index[first], graph.index[last], tile_workers, tiles)
        knowing_s = evaluate(parse_plan(f"{first}..{last}@tiles[{GRID[0]}x{GRID[1]},fused]({','.join(knowing)})"
                                        f">{gateway}", graph, names), actual).latency_s
        fixed_s, _, fixed_ok = measure(graph, actual, text, names[:1 + TILE_WORKERS], steal=False)
        stolen_s, stolen, stolen_ok = measure(graph, actual, text, names[:1 + TILE_WORKERS], steal=True)
        rows.append([label, f"{predicted_s * 1e3:.0f}", f"{knowing_s * 1e3:.0f}", f"{fixed_s * 1e3:.0f}",
                     f"{stolen_s * 1e3:.0f}",
                     f"{fixed_s / stolen_s:.2f}x", f"{stolen / (REQUESTS + 1):.1f}",
                     fixed_ok if fixed_ok == stolen_ok else f"{fixed_ok} / {stolen_ok}"])
    header = ["tile workers", "predicted, fixed tiles ms", "predicted, tiles assigned knowing the speeds ms",
              "measured p50, fixed ms", "measured p50, stealing ms",
              "stealing speed-up", "tiles stolen per request", "outputs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
