"""MEASURED figures of tiled stages on real worker processes (issue 15): `benchmarks/tiling.py --measure` prints them.

What runs: coinfer's runtime on local worker processes (one per device, one compute thread each,
secure, on this machine's loopback), deployed with the tiled plan lowered to crop, tile, halo and
stitch stages (coinfer.runtime.packaging.tiled_program). Every run's outputs are compared with the
unpartitioned model (`--verify`).

* Emulated devices: each stage is held to its predicted time on the catalog's Raspberry Pi 4B
  (coinfer's emulation: a worker sleeps for what its real compute leaves of the prediction) and
  each directed link is shaped in-process to 100 Mbit/s and 1 ms, as the predicted tables assume.
  This machine's cores are far faster than a Pi's, so up to 6 workers share its 2 cores and still
  hold to the Pi's times. Latency: the median of `REQUESTS` requests, one at a time.
* Real parallelism (no emulation, no shaping): the same model on one worker, then as 2 tiles on 2
  workers, each with one thread: the speed-up two of this machine's cores give.
* Memory: each worker's peak resident memory over the deployment and the requests (VmHWM) less
  the resident memory of an idle process that imported torch and the worker (what every worker
  pays before it holds anything; benchmarks/worker_memory.py measures it the same way): the
  weights, activations, kernels' workspace and allocator caches the plan cost that device.
  DeepThings' case: a 5x5 grid over Darknet-19's 16 layers, 25 tiles round-robin over 4 tile
  workers, a separate gateway worker scattering and gathering, against one worker computing the
  whole range behind the same gateway.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker_memory import idle_framework_bytes

from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.cluster import Cluster
from coinfer.cost import evaluate
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.graph import Graph
from coinfer.plan import Plan, parse_plan
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, run_plan
from coinfer.runtime.worker.memory import peak_resident_bytes

REQUESTS = 5
MB = 1e6


@dataclass(frozen=True)
class Measured:
    predicted_s: float
    p50_s: float
    lossless: str
    memory_bytes: dict[str, int]  # per device: peak over deploying and serving less an idle worker's


def run(graph: Graph, cluster: Cluster, text: str, devices: Sequence[str], *, emulate: bool,
        requests: int = REQUESTS) -> Measured:
    """Deploy `text` on fresh workers for `devices`, serve `requests`, verify; latency and memory."""
    problem = make_problem(graph, cluster)
    plan = parse_plan(text, graph, cluster.device_names)
    options = RunOptions(requests=requests, warmup=1, emulate=emulate, shaping="inproc" if emulate else "none",
                         verify=True, timeout_s=300, recover=False)
    with tempfile.TemporaryDirectory() as empty, LocalWorkers(devices, cwd=Path(empty)) as workers, \
            workers.client(timeout_s=120) as client:
        pids = {d: p.pid for d, p in workers.processes.items()}
        report = run_plan(plan, problem, client, workers.endpoint, options, example_inputs(graph, seed=2))
        peak = {d: peak_resident_bytes(pid) for d, pid in pids.items()}
    if report["ok"] != requests:
        raise SystemExit(f"{text}: {report['failed']} of {requests} requests failed: {report['errors'][:1]}")
    same = "bit-identical" if report.get("bit_identical") else (
        f"{report['max_abs_err'] / report['output_scale']:.1e} of scale" if report.get("verified") else "NOT EQUAL")
    return Measured(evaluate(plan, problem).latency_s, float(report["latency_s"]["p50"]), same,
                    {d: peak[d] - idle_worker_bytes() for d in devices})


_IDLE: list[int] = []


def idle_worker_bytes() -> int:
    if not _IDLE:
        _IDLE.append(idle_framework_bytes())
    return _IDLE[0]


def emulated_table(graph: Graph, cluster_of: Any, first: str, last: str, after: str | None,
                   counts: Sequence[int], grid_for: dict[int, tuple[int, int]]) -> str:
    """Fused and halo tiles on 1..n emulated Pi 4s: predicted and measured latency, speed-up, memory."""
    rows = []
    alone: dict[str, float] = {}
    for count in counts:
        cluster = cluster_of(count)
        names = cluster.device_names[:count]
        grid = grid_for[count]
        tiles = grid[0] * grid[1]
        devices = ",".join(names[i % count] for i in range(tiles))
        for mode in ("fused", "halo") if count > 1 else ("fused",):
            text = f"{first}..{last}@tiles[{grid[0]}x{grid[1]},{mode}]({devices})>{names[0]}"
            if after:
                text += f" | {after}@{names[0]}"
            if count == 1:
                text = names[0]
            m = run(graph, cluster, text, names, emulate=True)
            alone.setdefault("p50", m.p50_s)
            alone.setdefault("predicted", m.predicted_s)
            tile_memory = max(m.memory_bytes[d] for d in names[1:]) if count > 1 else m.memory_bytes[names[0]]
            rows.append([str(count), f"{grid[0]}x{grid[1]}", mode if count > 1 else "-",
                         f"{m.predicted_s * 1e3:.0f}", f"{m.p50_s * 1e3:.0f}", f"{m.p50_s / m.predicted_s:.2f}",
                         f"{alone['predicted'] / m.predicted_s:.2f}x", f"{alone['p50'] / m.p50_s:.2f}x",
                         f"{tile_memory / MB:.0f}", m.lossless])
    return _table(["devices", "grid", "mode", "predicted ms", "measured p50 ms", "measured / predicted",
                   "predicted speed-up", "measured speed-up", "peak memory less an idle worker, busiest tile worker MB",
                   "outputs"], rows)


def parallel_table(graph: Graph, first: str, last: str, after: str | None) -> str:
    """One worker against two tiles on two workers, no emulation: this machine's real parallel speed-up."""
    cluster = cluster_from_dict({"devices": {"w1": {"flops_per_s": 1e10, "origin": True}, "w2": {"flops_per_s": 1e10}},
                                 "links": [{"between": ["w1", "w2"], "bandwidth_bits_per_s": 1e10}]}, "two.yaml")
    rows = []
    base = run(graph, cluster, "w1", ("w1", "w2"), emulate=False, requests=10)
    rows.append(["1 worker", f"{base.p50_s * 1e3:.0f}", "1.00x", base.lossless])
    for mode in ("fused", "halo"):
        text = f"{first}..{last}@tiles[2x1,{mode}](w1,w2)>w1" + (f" | {after}@w1" if after else "")
        m = run(graph, cluster, text, ("w1", "w2"), emulate=False, requests=10)
        rows.append([f"2x1 {mode} on 2 workers", f"{m.p50_s * 1e3:.0f}", f"{base.p50_s / m.p50_s:.2f}x", m.lossless])
    return _table(["plan", "measured p50 ms", "speed-up", "outputs"], rows)


def deepthings_memory_table(graph: Graph, cluster_of: Any, first: str, last: str) -> str:
    """DeepThings' 5x5 grid over the 16 layers on 4 tile workers behind a gateway, against one worker."""
    cluster = cluster_of(5)  # pi1 is the gateway (origin): it scatters and gathers, computes no tile
    names = cluster.device_names
    workers = names[1:5]
    one_text = f"{first}..{last}@{names[1]}"
    tiled_text = f"{first}..{last}@tiles[5x5,fused]({','.join(workers[i % 4] for i in range(25))})>{names[0]}"
    problem = make_problem(graph, cluster)
    rows = []
    for label, text, devices in (("whole range on one worker", one_text, names[:2]),
                                 ("5x5 fused grid on 4 workers", tiled_text, names[:5])):
        plan: Plan = parse_plan(text, graph, names)
        predicted = evaluate(plan, problem).memory_by_device_bytes
        m = run(graph, cluster, text, devices, emulate=False, requests=3)
        worker = max(devices[1:], key=lambda d: m.memory_bytes[d])
        rows.append([label, f"{predicted[worker] / MB:.1f}", f"{m.memory_bytes[worker] / MB:.1f}", m.lossless])
    whole_p, tiled_p = float(rows[0][1]), float(rows[1][1])
    whole_m, tiled_m = float(rows[0][2]), float(rows[1][2])
    rows.append(["per tile worker vs one worker", f"{tiled_p / whole_p - 1:+.0%}", f"{tiled_m / whole_m - 1:+.0%}",
                 "DeepThings: -68%"])
    return _table(["case", "predicted memory MB (busiest tile worker)", "measured peak less an idle worker MB",
                   "outputs"], rows)


def message_cost_table(graph: Graph, cluster_of: Any, first: str, last: str, after: str | None,
                       grid_for: dict[int, tuple[int, int]], counts: Sequence[int] = (2, 4, 6)) -> str:
    """Halo exchange on emulated Pis: what the runtime adds beyond the prediction, per message of the stage."""
    rows = []
    for count in counts:
        cluster = cluster_of(count)
        names = cluster.device_names[:count]
        grid = grid_for[count]
        devices = ",".join(names[i % count] for i in range(grid[0] * grid[1]))
        text = f"{first}..{last}@tiles[{grid[0]}x{grid[1]},halo]({devices})>{names[0]}"
        if after:
            text += f" | {after}@{names[0]}"
        stage = evaluate(parse_plan(text, graph, names), make_problem(graph, cluster)).tiled_stages[0]
        m = run(graph, cluster, text, names, emulate=True)
        rows.append([str(count), f"{grid[0]}x{grid[1]}", str(stage.messages), str(stage.halo_messages),
                     f"{m.predicted_s * 1e3:.0f}", f"{m.p50_s * 1e3:.0f}",
                     f"{(m.p50_s - m.predicted_s) / stage.messages * 1e3:.2f}", m.lossless])
    return _table(["devices", "grid", "messages", "of them halos", "predicted ms", "measured p50 ms",
                   "measured less predicted, per message ms", "outputs"], rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def captured(spec: str, shape: tuple[int, ...] | None) -> Graph:
    return capture(spec, input_shape=shape) if shape else capture(spec)

