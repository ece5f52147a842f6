"""PREDICTED: the tiling solvers against the layer-only ones on the camera-edge-cloud preset, and D3's claims.

`benchmarks/tiling.py` prints this table. For each model every solver's plan is priced by
`cost.evaluate` on the `camera-edge-cloud` preset (a Raspberry Pi 4B camera, four Jetson Nano edge
nodes on a gigabit LAN, a V100 cloud behind 100 Mbit/s; the catalog's sustained PyTorch speeds):
latency, energy, bytes over the backbone (the edge-cloud links, crops and tiles included) and the
solve time. D3 (REFERENCE.md section 5) reports up to 3.4x faster inference and 3.68x less backbone
traffic than the state of the art with its HPA and VSM together; here the closest reading is vsm
(HPA with the edge stage tiled) against the best layer-only plan of neurosurgeon, dads, hpa and
ilp, the baselines D3 compares with being layer partitioners.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from coinfer.api import make_problem
from coinfer.api import plan as solve
from coinfer.capture import capture
from coinfer.cluster import Cluster
from coinfer.cost import Breakdown, evaluate
from coinfer.errors import CoinferError
from coinfer.files.cluster_file import load_cluster
from coinfer.problem import Problem

PRESET = "camera-edge-cloud"
LAYER_ONLY = ("neurosurgeon", "dads", "hpa", "ilp")
TILING = ("ftp", "vsm", "coedge")
MODELS = (("VGG16", "torchvision:vgg16", None), ("resnet18", "torchvision:resnet18", None),
          ("Darknet-19 first 16", "python:tiling_models:darknet16", None), ("resnet50", "torchvision:resnet50", None))


def backbone_bytes(b: Breakdown, problem: Problem) -> int:
    tier = {d.name: d.tier for d in problem.cluster.devices}

    def on_backbone(source: str, target: str) -> bool:
        return {tier[source], tier[target]} == {"edge", "cloud"}

    moved = sum(t.size_bytes for t in b.transfers if on_backbone(t.source, t.target))
    return moved + sum(u.size_bytes for c in b.tiled_stages for (s, t), u in c.link_use.items() if on_backbone(s, t))


def solver_rows(objective: str = "latency") -> tuple[list[list[str]], list[list[str]]]:
    cluster = load_cluster(PRESET)
    rows, d3 = [], []
    for label, spec, shape in MODELS:
        graph = capture(spec, input_shape=shape) if shape else capture(spec)
        problem = make_problem(graph, cluster, objective=objective)
        priced: dict[str, tuple[Breakdown, float, str]] = {}
        for name in (*LAYER_ONLY, *TILING):
            start = time.perf_counter()
            try:
                plan = solve(problem, solver=name)
            except CoinferError as exc:
                rows.append([label, name, "-", "-", "-", "-", f"cannot: {exc}"[:60]])
                continue
            elapsed = time.perf_counter() - start
            b = evaluate(plan, problem)
            priced[name] = (b, elapsed, str(plan))
            shown = str(plan) if len(str(plan)) <= 90 else str(plan)[:87] + "..."
            rows.append([label, name, f"{b.latency_s * 1e3:.1f}", f"{b.energy_j:.2f}",
                         f"{backbone_bytes(b, problem) / 1e6:.3f}", f"{elapsed:.2f}", f"`{shown}`"])
        layer = min((n for n in LAYER_ONLY if n in priced), key=lambda n: priced[n][0].latency_s)
        base, vsm = priced[layer][0], priced["vsm"][0]
        d3.append([label, layer, f"{base.latency_s * 1e3:.1f}", f"{vsm.latency_s * 1e3:.1f}",
                   f"{base.latency_s / vsm.latency_s:.2f}x", f"{backbone_bytes(base, problem) / 1e6:.3f}",
                   f"{backbone_bytes(vsm, problem) / 1e6:.3f}",
                   _ratio(backbone_bytes(base, problem), backbone_bytes(vsm, problem))])
    return rows, d3


# CoEdge's testbed mixes device classes; four catalogued ones of different speed and power here
MIXED = {"devices": {"pi": {"tier": "end", "device": "rpi4b", "origin": True},
                     "pi5": {"tier": "edge", "device": "rpi5"}, "nano": {"tier": "edge", "device": "jetson-nano"},
                     "laptop": {"tier": "edge", "device": "laptop-cpu"}},
         "links": [{"between": [a, b], "bandwidth_bits_per_s": 100e6, "latency_s": 0.001, "power_w": 1.0}
                   for a, b in (("pi", "pi5"), ("pi", "nano"), ("pi", "laptop"), ("pi5", "nano"), ("pi5", "laptop"),
                                ("nano", "laptop"))]}


def coedge_rows(tightness: float = 0.8) -> list[list[str]]:
    """CoEdge under a deadline of `tightness` x the best single device's latency, objective energy,
    against equal halo strips over the same servers (an even split, as MoDNN-style baselines do), on
    the preset (four identical edge nodes) and on a mixed cluster."""
    from coinfer.files.cluster_file import cluster_from_dict

    rows = []
    for cluster in (load_cluster(PRESET), cluster_from_dict(MIXED, "mixed.yaml")):
        rows += _coedge_rows(cluster, tightness)
    return rows


def _coedge_rows(cluster: Cluster, tightness: float) -> list[list[str]]:
    from coinfer.plan import all_on
    from coinfer.solve.tiled_ranges import tileable_segments, tiled_plan

    edges = [d.name for d in cluster.devices if d.tier == "edge"]
    rows = []
    for label, spec, shape in MODELS:
        graph = capture(spec, input_shape=shape) if shape else capture(spec)
        free = make_problem(graph, cluster)
        single = min((evaluate(all_on(graph, d), free) for d in cluster.device_names), key=lambda b: b.latency_s)
        deadline = tightness * single.latency_s
        problem = make_problem(graph, cluster, objective="energy", deadline_s=deadline)
        segment = tileable_segments(graph)[0]
        even = tiled_plan(problem, dict(all_on(graph, problem.origin).placement), segment.start, segment.stop,
                          edges, (len(edges), 1), edges[0], "halo", after=edges[0])
        for name, plan in (("coedge", solve(problem, solver="coedge")), ("even halo strips on the edge", even)):
            b = evaluate(plan, problem)
            rows.append([cluster.name, label, f"{deadline * 1e3:.0f}", name, f"{b.latency_s * 1e3:.1f}",
                         f"{b.energy_j:.3f}",
                         "yes" if b.feasible else "NO", f"`{str(plan)[:90]}`"])
    return rows


def _ratio(before: int, after: int) -> str:
    if after == 0:
        return "all removed" if before else "none either way"
    return f"{before / after:.2f}x"


def tables(objective: str = "latency") -> Sequence[str]:
    rows, d3 = solver_rows(objective)
    head = ["model", "solver", "latency ms", "energy J", "backbone MB", "solve s", "plan"]
    d3_head = ["model", "best layer-only", "its latency ms", "vsm latency ms", "speed-up (D3: up to 3.4x)",
               "its backbone MB", "vsm backbone MB", "less backbone traffic (D3: up to 3.68x)"]
    coedge_head = ["cluster", "model", "deadline ms", "plan", "latency ms", "energy J", "meets deadline", "placement"]
    return [_table(head, rows), _table(d3_head, d3), _table(coedge_head, coedge_rows())]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
