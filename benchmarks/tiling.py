"""Spatial tiling (issue 15): speed-up, bytes moved, memory, redundant overlap; predicted, and measured with --measure.

Without flags every figure is PREDICTED by the cost model of
`coinfer.cost.tiled_stage` (each tile's compute proportional to the output positions it computes, halo
overlap included; scatter and gather messages over the links actually used, scheduled as FIFO
resources; memory = the range's weights + the largest working set of one node on one tile), from
node times that `coinfer.profile.resolve` predicts for a catalogued Raspberry Pi 4B (the catalog's
sustained PyTorch speed). `--solvers` adds the tiling solvers against the layer-only ones on the
camera-edge-cloud preset, D3's claims and CoEdge under deadlines (benchmarks/tiling_solvers.py,
predicted); `--measure` runs the tiled plans on local workers: emulated Pis, real parallelism on two
workers, and memory per worker (benchmarks/tiling_runs.py; its docstring says how);
`--message-cost` measures what each halo-exchange message costs the runtime beyond the link model;
`--steal` runs DeepThings' work stealing against fixed tiles when some devices are slower than
planned (benchmarks/tiling_stealing.py).

Models and ranges (batch 1, float32, random weights; the figures depend on shapes only):
* VGG16's features (torchvision:vgg16 at 224 x 224): features.0..features.30, up to the avgpool;
* Darknet-19's first 16 layers (YOLOv2's backbone as DeepThings tiles it, at 416 x 416;
  benchmarks/tiling_models.py): layers.0..layers.15;
* resnet18 (torchvision:resnet18 at 224 x 224): conv1..layer4, up to the avgpool.

Cluster: 1 to 6 identical rpi4b, each pair joined by a 100 Mbit/s link of 1 ms latency (no
transmit power: a wired LAN); the first device holds the range's input, computes a tile, and
gathers the stitched output. A grid of n tiles gives one tile to each of n devices (1x1, 2x1, 3x1,
2x2, 5x1, 3x2: near-square where n allows). "links" treats every directed link as its own FIFO, as
coinfer's simulator and emulated links do (the scatter device's crops to different peers overlap);
"ports" gives every device one port of the link's speed (a switched LAN: the crops leave one after
another, the output tiles arrive one at a time). Halo exchange (`mode="halo"`, CoEdge) is priced
beside fused tiles: owned parts only, one message per halo between tile devices, each tile
starting a node once its halos arrived. Which wins: halo exchange whenever fused tiles recompute
more than about a tenth (deep ranges, small maps), since each of its many messages costs one
link latency (1 ms) against tens of ms of compute per op; fused tiles only on shallow ranges
(redundancy near 1), where those latencies are all halo exchange adds.

A layer-only plan cannot beat one device here: the devices are identical and a request's stages
run one after another, so every cut only adds a transfer (cost.evaluate's model); the speed-up over
one device is also the speed-up over the best layer-only plan.

    .venv/bin/python benchmarks/tiling.py [--solvers] [--measure] [--message-cost] [--steal]
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # python:tiling_models:darknet16 imports from here

from coinfer.capture import capture, load_program
from coinfer.cluster import Cluster
from coinfer.cost.tile_shapes import RangeShapes, range_nodes
from coinfer.cost.tiled_stage import Contention, Mode, TiledStageCost, tiled_stage_cost
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.graph import Graph
from coinfer.profile.resolve import resolve_times
from coinfer.tiling import SpatialRange, equal_grid, spatial_range, tile_bounds

DEVICE_COUNTS = (1, 2, 3, 4, 5, 6)
GRID_FOR = {1: (1, 1), 2: (2, 1), 3: (3, 1), 4: (2, 2), 5: (5, 1), 6: (3, 2)}  # (tile rows, tile columns)
LAN_BITS_PER_S = 100e6
LAN_LATENCY_S = 1e-3
CATALOG_DEVICE = "rpi4b"
# DeepThings' own devices; slower than a Pi 4, so 4 tile workers' real compute on 2 cores stays within their times
STEALING_DEVICE = "rpi3b"
MB = 1e6


@dataclass(frozen=True)
class ModelCase:
    name: str
    spec: str
    input_shape: tuple[int, ...]
    first: str
    last_prefix: str  # the range ends at the last node whose id starts with this (the whole range)
    depths: tuple[tuple[str, str], ...]  # (label, prefix of the last node) for the fused-depth sweep


CASES = (
    ModelCase("VGG16 features", "torchvision:vgg16", (1, 3, 224, 224), "features.0", "features.30",
              (("2 conv + pool", "features.4"), ("4 conv + 2 pools", "features.9"),
               ("7 conv + 3 pools", "features.16"), ("10 conv + 4 pools", "features.23"),
               ("13 conv + 5 pools", "features.30"))),
    ModelCase("Darknet-19 first 16", "python:tiling_models:darknet16", (1, 3, 416, 416), "layers.0.0", "layers.15",
              (("2 layers", "layers.1"), ("4 layers", "layers.3"), ("8 layers", "layers.7"),
               ("12 layers", "layers.11"), ("16 layers", "layers.15"))),
    ModelCase("resnet18 conv1..layer4", "torchvision:resnet18", (1, 3, 224, 224), "conv1", "layer4.",
              (("stem (conv1..maxpool)", "maxpool"), ("+ layer1", "layer1."), ("+ layer2", "layer2."),
               ("+ layer3", "layer3."), ("+ layer4", "layer4."))),
)


def lan(count: int, device: str = CATALOG_DEVICE, runtime_s: float = 0.0) -> Cluster:
    """count devices on a switch; `runtime_s` the runtime's own cost per message (coinfer.cluster.Link)."""
    names = [f"pi{i}" for i in range(1, count + 1)]
    return cluster_from_dict({
        "devices": {n: {"tier": "edge", "device": device, "origin": n == names[0]} for n in names},
        "links": [{"between": [a, b], "bandwidth_bits_per_s": LAN_BITS_PER_S, "latency_s": LAN_LATENCY_S,
                   "runtime_s": runtime_s} for i, a in enumerate(names) for b in names[i + 1:]],
    }, name=f"{count} x {device}")


def last_node(graph: Graph, prefix: str) -> str:
    matching = [n.id for n in graph.nodes if n.id == prefix or n.id.startswith(prefix if prefix.endswith(".")
                                                                                  else prefix + ".")]
    if not matching:
        raise SystemExit(f"{graph.name}: no node starts with {prefix!r}")
    return matching[-1]


def stage(graph: Graph, spatial: SpatialRange, times: Any, cluster: Cluster, grid: tuple[int, int],
          device_count: int, contention: Contention = "links", mode: Mode = "fused") -> TiledStageCost:
    tiles = equal_grid(*spatial.output_size, *grid)
    names = cluster.device_names[:device_count]
    devices = [names[i % device_count] for i in range(len(tiles.tiles()))]  # round-robin, row-major
    return tiled_stage_cost(graph, spatial, tiles, devices, times, cluster, names[0], names[0], contention, mode)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def device_table(graph: Graph, spatial: SpatialRange, times: Any, cluster: Cluster) -> str:
    alone = stage(graph, spatial, times, cluster, (1, 1), 1)
    rows = []
    for count in DEVICE_COUNTS:
        grid = GRID_FOR[count]
        by_links = stage(graph, spatial, times, cluster, grid, count)
        by_ports = stage(graph, spatial, times, cluster, grid, count, "ports")
        memory = by_links.max_tile_device_memory_bytes
        rows.append([
            str(count), f"{grid[0]}x{grid[1]}", f"{by_links.latency_s * 1e3:.0f}",
            f"{alone.latency_s / by_links.latency_s:.2f}x", f"{alone.latency_s / by_ports.latency_s:.2f}x",
            f"{by_links.moved_bytes / MB:.2f}", f"{memory / MB:.1f}",
            f"{memory / by_links.whole_memory_bytes - 1:+.0%}", f"{by_links.redundancy:.2f}",
            f"{by_links.energy_j / alone.energy_j - 1:+.0%}",
        ])
    return table(["devices", "grid", "latency ms", "speed-up (links)", "speed-up (ports)", "moved MB",
                  "memory/device MB", "vs one device", "redundancy", "energy vs one"], rows)


def mode_table(graph: Graph, spatial: SpatialRange, times: Any, cluster: Cluster) -> str:
    """Fused against halo exchange, one tile per device, links contention."""
    alone = stage(graph, spatial, times, cluster, (1, 1), 1)
    rows = []
    for count in DEVICE_COUNTS[1:]:
        grid = GRID_FOR[count]
        fused = stage(graph, spatial, times, cluster, grid, count)
        halo = stage(graph, spatial, times, cluster, grid, count, mode="halo")
        rows.append([
            str(count), f"{grid[0]}x{grid[1]}", f"{alone.latency_s / fused.latency_s:.2f}x",
            f"{alone.latency_s / halo.latency_s:.2f}x", f"{fused.redundancy:.2f}",
            f"{sum(t.compute_s for t in halo.tiles) / alone.latency_s:.2f}", str(fused.messages), str(halo.messages),
            f"{fused.moved_bytes / MB:.2f}", f"{halo.moved_bytes / MB:.2f}",
            f"{fused.energy_j / alone.energy_j - 1:+.0%}", f"{halo.energy_j / alone.energy_j - 1:+.0%}",
        ])
    return table(["devices", "grid", "fused speed-up", "halo speed-up", "fused redundancy", "halo compute / whole",
                  "fused messages", "halo messages", "fused moved MB", "halo moved MB", "fused energy vs one",
                  "halo energy vs one"], rows)


def depth_table(case: ModelCase, graph: Graph, program: Any, times: Any, cluster: Cluster) -> str:
    rows = []
    for label, prefix in case.depths:
        spatial = spatial_range(graph, case.first, last_node(graph, prefix), program)
        alone = stage(graph, spatial, times, cluster, (1, 1), 1)
        four = stage(graph, spatial, times, cluster, (2, 2), 4)
        nine = stage(graph, spatial, times, cluster, (3, 3), 6)
        four_halo = stage(graph, spatial, times, cluster, (2, 2), 4, mode="halo")
        # the work the tiles do in all, against the range computed once (identical devices)
        overhead = sum(t.compute_s for t in four.tiles) / alone.latency_s
        rows.append([
            label, f"{spatial.output_size[0]}x{spatial.output_size[1]}", f"{four.redundancy:.2f}",
            f"{overhead:.2f}", f"{alone.latency_s / four.latency_s:.2f}x",
            f"{four.max_tile_device_memory_bytes / four.whole_memory_bytes - 1:+.0%}",
            f"{nine.redundancy:.2f}", f"{alone.latency_s / nine.latency_s:.2f}x",
            f"{alone.latency_s / four_halo.latency_s:.2f}x", str(four_halo.messages),
        ])
    return table(["fused range", "output", "2x2 redundancy", "2x2 compute / whole", "2x2 on 4: speed-up",
                  "2x2 memory vs one", "3x3 redundancy", "3x3 on 6: speed-up", "2x2 halo on 4: speed-up",
                  "2x2 halo messages"], rows)


def all_maps_bytes(graph: Graph, spatial: SpatialRange, tile: Any) -> int:
    """Every map of the range held at once for one tile (input, every op's output), as Darknet's own
    runtime allocates them: DeepThings' accounting of a device's memory."""
    shapes = RangeShapes(graph, spatial, range_nodes(graph, spatial))
    bounds = tile_bounds(spatial, tile)
    return shapes.value_bytes(spatial.input, bounds.input_region) + sum(
        shapes.value_bytes(op.name, bounds.ops[op.name].output) for op in spatial.ops if op.kind != "item")


def deepthings_table(graph: Graph, spatial: SpatialRange, times: Any, cluster: Cluster) -> str:
    alone = stage(graph, spatial, times, cluster, (1, 1), 1)
    height, width = spatial.output_size
    whole_maps = all_maps_bytes(graph, spatial, equal_grid(height, width, 1, 1).tiles()[0])
    tile_maps = max(all_maps_bytes(graph, spatial, t) for t in equal_grid(height, width, 5, 5).tiles())
    weights = alone.weights_bytes
    rows = []
    for count in DEVICE_COUNTS:
        cost = stage(graph, spatial, times, cluster, (5, 5), count)
        memory = cost.max_tile_device_memory_bytes
        rows.append([str(count), f"{alone.latency_s / cost.latency_s:.2f}x", f"{cost.redundancy:.2f}",
                     f"{memory / MB:.1f}", f"{alone.whole_memory_bytes / MB:.1f}",
                     f"{memory / cost.whole_memory_bytes - 1:+.0%}",
                     f"{(memory - cost.weights_bytes) / (cost.whole_memory_bytes - cost.weights_bytes) - 1:+.0%}",
                     f"{(weights + tile_maps) / MB:.1f} vs {(weights + whole_maps) / MB:.1f}",
                     f"{(weights + tile_maps) / (weights + whole_maps) - 1:+.0%}"])
    return table(["devices", "speed-up", "redundancy", "memory/device MB", "one device MB", "memory vs one",
                  "activations vs one", "all maps held MB (tile vs whole)", "all maps held vs one"], rows)


def measured_sections(cluster_of: Any) -> None:
    from tiling_runs import captured, deepthings_memory_table, emulated_table, parallel_table

    runs = (("VGG16 features", "python:tiling_models:vgg16_features", None, "features.0", "features.30", None),
            ("Darknet-19 first 16", "python:tiling_models:darknet16", None, "layers.0.0", "layers.15.2", None),
            ("resnet18", "torchvision:resnet18", (1, 3, 224, 224), "conv1", "layer4.1.relu.relu__16", "avgpool..fc"))
    for name, spec, shape, first, last, after in runs:
        graph = captured(spec, shape)
        print(f"## Measured: {name} ({first}..{last}) on 1..6 emulated {CATALOG_DEVICE}s\n")
        print(emulated_table(graph, cluster_of, first, last, after, DEVICE_COUNTS, GRID_FOR) + "\n")
        print(f"Measured: {name}, real parallelism on this machine's 2 cores (no emulation):\n")
        print(parallel_table(graph, first, last, after) + "\n")
        if "darknet" in spec:
            print("Measured: DeepThings' 5x5 grid over the 16 layers, memory per tile worker:\n")
            print(deepthings_memory_table(graph, cluster_of, first, last) + "\n")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--measure", action="store_true",
                        help="also run tiled plans on local workers (emulated Pis, 2 real workers, memory; minutes)")
    parser.add_argument("--runtime-s", type=float, default=0.0,
                        help="the runtime's cost per message priced on every link of --message-cost (s)")
    parser.add_argument("--message-cost", action="store_true",
                        help="also measure what halo exchange's messages cost the runtime beyond the model (minutes)")
    parser.add_argument("--steal", action="store_true",
                        help="also measure work stealing against fixed tiles on slowed workers (minutes)")
    parser.add_argument("--solvers", action="store_true",
                        help="also compare the tiling solvers with the layer-only ones on camera-edge-cloud")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    try:
        import torch

        torch.set_num_threads(1)  # capture only; other benchmarks share this machine
    except ImportError:
        pass
    start_s = time.perf_counter()
    cluster = lan(max(DEVICE_COUNTS))
    print(f"# Spatial tiling: predicted by the cost model ({CATALOG_DEVICE} x 1..6, "
          f"{LAN_BITS_PER_S / 1e6:.0f} Mbit/s, {LAN_LATENCY_S * 1e3:.0f} ms links)\n")
    print("These figures are PREDICTED by coinfer.cost.tiled_stage from the catalog's sustained PyTorch speed of the "
          "device (--measure adds runs on workers). Memory = the range's weights + the largest working "
          "set of one node on one tile (cost.evaluate's measure), the maximum over the tile devices.\n")
    for case in CASES:
        # a python: spec's example input fixes its shape; torchvision models take one
        graph = capture(case.spec, input_shape=None if case.spec.startswith("python:") else case.input_shape)
        program = load_program(graph.source) if graph.source is not None else None
        times, sources = resolve_times(graph, cluster)
        last = last_node(graph, case.last_prefix)
        spatial = spatial_range(graph, case.first, last, program)
        alone = stage(graph, spatial, times, cluster, (1, 1), 1)
        print(f"## {case.name}: {case.first}..{last}, input {case.input_shape[2]}x{case.input_shape[3]} -> "
              f"{spatial.output_size[0]}x{spatial.output_size[1]}; one device {alone.latency_s * 1e3:.0f} ms, "
              f"{alone.whole_memory_bytes / MB:.1f} MB ({alone.weights_bytes / MB:.1f} MB weights); "
              f"times {sources[cluster.device_names[0]]}\n")
        print("Predicted, one tile per device:\n")
        print(device_table(graph, spatial, times, cluster) + "\n")
        print("Predicted, fused tiles against halo exchange (one tile per device, links):\n")
        print(mode_table(graph, spatial, times, cluster) + "\n")
        print("Predicted redundant overlap as the fused depth grows (the range starts at the input):\n")
        print(depth_table(case, graph, program, times, cluster) + "\n")
        if case.spec.startswith("python:tiling_models"):
            print("Predicted, DeepThings' 5x5 grid over the 16 layers (25 tiles round-robin over the devices; "
                  "DeepThings reports memory per device -68%):\n")
            print(deepthings_table(graph, spatial, times, cluster) + "\n")
    if args.solvers:
        from tiling_solvers import PRESET, tables

        solvers, d3, coedge = tables()
        print(f"## Solvers on the {PRESET} preset (predicted, objective latency)\n\n{solvers}\n")
        print(f"## D3's claims here (predicted: vsm against the best layer-only plan)\n\n{d3}\n")
        print("## CoEdge under a deadline of 0.8 x the fastest single device (predicted, objective energy)"
              f"\n\n{coedge}\n")
    if args.measure:
        measured_sections(lan)
    if args.message_cost:
        from tiling_runs import captured, message_cost_table

        print(f"## Measured: halo exchange's per-message runtime cost, resnet18 conv1..layer4 on emulated "
              f"{CATALOG_DEVICE}s\n")
        if args.runtime_s:
            print(f"(every link prices the runtime's {args.runtime_s * 1e3:.2f} ms per message)\n")
        print(message_cost_table(captured("torchvision:resnet18", (1, 3, 224, 224)),
                                 lambda count: lan(count, runtime_s=args.runtime_s), "conv1",
                                 "layer4.1.relu.relu__16", "avgpool..fc", GRID_FOR) + "\n")
    if args.steal:
        from tiling_runs import captured
        from tiling_stealing import stealing_table

        print("## Measured: work stealing (DeepThings) against fixed tiles, Darknet-19's 16 layers, 5x5 fused "
              f"grid, a gateway and 4 emulated {STEALING_DEVICE} tile workers, some slower than planned\n")
        print(stealing_table(captured("python:tiling_models:darknet16", None),
                             lambda count: lan(count, STEALING_DEVICE), "layers.0.0", "layers.15.2") + "\n")
    print(f"wall time {time.perf_counter() - start_s:.0f} s")


if __name__ == "__main__":
    main()
