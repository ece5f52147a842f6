"""The price of a fused tiled stage (coinfer.cost.tiled_stage), on hand-written ranges worked out by hand.

The ranges are chains of 3x3 'same' convolutions written as a Graph and a SpatialRange directly
(no torch, no capture), so every expected number below follows from the sizes in a comment.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from coinfer.cluster import Cluster, Device, Link
from coinfer.cost.tiled_stage import tiled_stage_cost
from coinfer.errors import PlanError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.tiling import Region, SpatialOp, SpatialRange, Window, Window1d, equal_grid

FLOAT32_BYTES = 4
SAME_3X3 = Window(Window1d(3, 1, 1, 1), Window1d(3, 1, 1, 1))


def conv_chain(channels: list[int], height: int, width: int) -> tuple[Graph, SpatialRange]:
    """Convolutions conv1..convK (3x3, stride 1, padding 1) from channels[0] to channels[K] on a
    height x width map, float32, batch 1; conv k has channels[k-1] * channels[k] * 9 weights."""
    inputs = (GraphInput("input", TensorSpec(channels[0] * height * width * FLOAT32_BYTES,
                                             (1, channels[0], height, width), "float32")),)
    nodes, ops, previous, previous_op = [], [], "input", "x"
    for k, (c_in, c_out) in enumerate(pairwise(channels), start=1):
        size = c_out * height * width * FLOAT32_BYTES
        nodes.append(Node(f"conv{k}", (previous,), flops=0.0, output_bytes=size,
                          param_bytes=c_in * c_out * 9 * FLOAT32_BYTES, op="aten.conv2d",
                          outputs=(TensorSpec(size, (1, c_out, height, width), "float32"),),
                          source_nodes=(f"conv2d_{k}",)))
        ops.append(SpatialOp(f"conv2d_{k}", f"conv{k}", "aten.conv2d", "window", (previous_op,), (height, width),
                             (height, width), SAME_3X3))
        previous, previous_op = f"conv{k}", f"conv2d_{k}"
    return Graph("chain", inputs, tuple(nodes)), SpatialRange("x", (height, width), tuple(ops), previous_op)


def two_devices(*, back_link: bool = True) -> Cluster:
    """A (2 W busy) and B (3 W busy); links of 8000 bit/s = 1000 B/s, 10 ms latency, 0.5 W transmit."""
    links = [Link("A", "B", 8000.0, latency_s=0.01, power_w=0.5)]
    if back_link:
        links.append(Link("B", "A", 8000.0, latency_s=0.01, power_w=0.5))
    return Cluster("pair", (Device("A", "edge", 1e9, power_w=2.0, origin=True), Device("B", "edge", 1e9, power_w=3.0)),
                   tuple(links))


def test_a_two_convolution_chain_in_two_strips_costs_what_is_worked_out_by_hand() -> None:
    # 8 x 4 map; input 2 channels (8 B a position), conv1 -> 4 channels (16 B), conv2 -> 2 channels (8 B).
    # Weights: conv1 2*4*9*4 = 288 B, conv2 4*2*9*4 = 288 B. Times: conv1 0.064 s, conv2 0.032 s.
    graph, spatial = conv_chain([2, 4, 2], 8, 4)
    times = {d: {"conv1": 0.064, "conv2": 0.032} for d in ("A", "B")}
    grid = equal_grid(8, 4, 2, 1)  # tile 0 rows [0, 4), tile 1 rows [4, 8), all 4 columns
    cost = tiled_stage_cost(graph, spatial, grid, ["A", "B"], times, two_devices(), scatter="A", gather="A")

    # Tile 0: conv2 rows [0, 4) = 16 positions, conv1 rows [0, 5) = 20, input rows [0, 6) = 24 (tile 1 mirrors it).
    t0, t1 = cost.tiles
    assert t0.input_region == Region.of(0, 6, 0, 4) and t1.input_region == Region.of(2, 8, 0, 4)
    assert t0.computed_positions == t1.computed_positions == 36
    # compute: 20/32 * 0.064 + 16/32 * 0.032 = 0.040 + 0.016 = 0.056 s
    assert t0.compute_s == pytest.approx(0.056) and t1.compute_s == pytest.approx(0.056)
    # tile 1's crop 24 positions * 8 B = 192 B: 0.01 + 192 / 1000 = 0.202 s; its output 16 * 8 = 128 B: 0.138 s
    assert (t1.input_bytes, t1.output_bytes) == (192, 128)
    assert t1.scatter_s == pytest.approx(0.202) and t1.gather_s == pytest.approx(0.138)
    assert t0.scatter_s == t0.gather_s == 0.0  # tile 0 is on the scatter and gather device
    assert t0.output_ready_s == pytest.approx(0.056)
    assert t1.output_ready_s == pytest.approx(0.202 + 0.056 + 0.138)
    assert cost.latency_s == pytest.approx(0.396)
    assert (cost.scatter_bytes, cost.gather_bytes, cost.moved_bytes) == (192, 128, 320)

    # redundancy: conv1 (20 + 20) / 32 = 1.25, conv2 32 / 32 = 1; total 72 / 64 = 1.125
    assert cost.redundancy_by_node == pytest.approx({"conv1": 1.25, "conv2": 1.0})
    assert cost.redundancy == pytest.approx(1.125)

    # memory: weights 576 B. Tile working set, conv1: input 192 + output 20*16 = 320, plus the convolution's
    # blocked output 320 and weights 288 = 1120 (conv2: 320 + 128 + 128 + 288 = 864). Whole map, conv1:
    # 256 + 512 + 512 + 288 = 1568. So 576 + 1120 = 1696 per device against 576 + 1568 = 2144 for one device.
    assert cost.weights_bytes == 576
    assert cost.devices["A"].memory_bytes == cost.devices["B"].memory_bytes == 1696
    assert cost.whole_memory_bytes == 2144
    assert cost.devices["A"].held_map_bytes == 256 + 256  # the whole input it scatters, the output it stitches

    # energy: A computes 0.056 s at 2 W and sends the crop 0.202 s at 0.5 W; B 0.056 s at 3 W and 0.138 s at 0.5 W
    assert cost.devices["A"].energy_j == pytest.approx(0.112 + 0.101)
    assert cost.devices["B"].energy_j == pytest.approx(0.168 + 0.069)
    assert cost.whole_compute_s == pytest.approx({"A": 0.096, "B": 0.096})


def test_one_tile_on_one_device_is_the_untiled_range() -> None:
    graph, spatial = conv_chain([3, 8, 8, 4], 12, 10)
    times = {d: {"conv1": 0.3, "conv2": 0.5, "conv3": 0.2} for d in ("A", "B")}
    cost = tiled_stage_cost(graph, spatial, equal_grid(12, 10, 1, 1), ["B"], times, two_devices(),
                            scatter="B", gather="B")
    assert cost.latency_s == pytest.approx(1.0) == cost.whole_compute_s["B"]
    assert cost.devices["B"].memory_bytes == cost.whole_memory_bytes
    assert cost.redundancy == 1.0 and cost.moved_bytes == 0


@pytest.mark.parametrize("grid", [(2, 1), (2, 2), (3, 3)])
def test_redundant_work_is_at_least_one_and_grows_with_the_fused_depth(grid: tuple[int, int]) -> None:
    redundancy = []
    for depth in (1, 2, 4, 6):
        graph, spatial = conv_chain([2] * (depth + 1), 24, 24)
        times = {"A": {n.id: 0.1 for n in graph.nodes}}
        cluster = Cluster("one", (Device("A", "edge", 1e9, origin=True),))
        tiles = equal_grid(24, 24, *grid)
        cost = tiled_stage_cost(graph, spatial, tiles, ["A"] * len(tiles.tiles()), times, cluster, "A", "A")
        redundancy.append(cost.redundancy)
    assert redundancy[0] == 1.0  # one convolution: only its input crops overlap, no output is computed twice
    assert all(later > earlier for earlier, later in pairwise(redundancy))


def test_memory_per_device_falls_with_more_tiles_but_the_weights_stay() -> None:
    graph, spatial = conv_chain([3, 16, 16, 16], 64, 64)
    names = [f"d{i}" for i in range(16)]
    cluster = Cluster("lan", tuple(Device(n, "edge", 1e9, origin=n == "d0") for n in names),
                      tuple(Link(a, b, 1e8, latency_s=1e-3) for a in names for b in names if a != b))
    times = {n: {node.id: 0.1 for node in graph.nodes} for n in names}
    memory, weights = [], set()
    for rows, cols in ((1, 1), (2, 1), (2, 2), (4, 4)):
        cost = tiled_stage_cost(graph, spatial, equal_grid(64, 64, rows, cols), names[:rows * cols], times, cluster,
                                "d0", "d0")
        memory.append(cost.max_tile_device_memory_bytes - cost.weights_bytes)
        weights.update(d.weights_bytes for d in cost.devices.values())
    assert all(later < earlier for earlier, later in pairwise(memory))
    assert weights == {graph.total_param_bytes}  # every tile device holds all of the range's weights


def test_ports_send_one_crop_at_a_time_and_links_in_parallel() -> None:
    # S scatters to B and C and computes nothing; each crop of tile rows [0, 4) / [4, 8) of an 8 x 4 map
    # through one conv is 5 rows * 4 columns * 8 B = 160 B: 0.16 s on the wire, 0.17 s with the latency.
    graph, spatial = conv_chain([2, 2], 8, 4)
    names = ("S", "B", "C")
    cluster = Cluster("star", tuple(Device(n, "edge", 1e9, origin=n == "S") for n in names),
                      tuple(Link(a, b, 8000.0, latency_s=0.01) for a in names for b in names if a != b))
    times = {n: {"conv1": 0.0} for n in names}
    grid = equal_grid(8, 4, 2, 1)
    links = tiled_stage_cost(graph, spatial, grid, ["B", "C"], times, cluster, "S", "S", "links")
    ports = tiled_stage_cost(graph, spatial, grid, ["B", "C"], times, cluster, "S", "S", "ports")
    assert [t.input_ready_s for t in links.tiles] == pytest.approx([0.17, 0.17])
    assert [t.input_ready_s for t in ports.tiles] == pytest.approx([0.17, 0.33])
    # the outputs (4 rows * 4 * 8 B = 128 B, 0.138 s) then queue at S's one incoming port
    assert ports.latency_s == pytest.approx(max(0.17 + 0.138, 0.33 + 0.138))


def test_a_tile_on_a_device_with_no_link_from_the_scatter_or_to_the_gather_device_names_the_link() -> None:
    graph, spatial = conv_chain([2, 2], 8, 4)
    times = {d: {"conv1": 0.1} for d in ("A", "B")}
    with pytest.raises(PlanError, match=r"B->A .*gather"):
        tiled_stage_cost(graph, spatial, equal_grid(8, 4, 2, 1), ["A", "B"], times, two_devices(back_link=False),
                         "A", "A")
    no_forward_link = two_devices().without_links([("A", "B")])
    with pytest.raises(PlanError, match=r"A->B .*scatter"):
        tiled_stage_cost(graph, spatial, equal_grid(8, 4, 2, 1), ["A", "B"], times, no_forward_link, "A", "A")


def test_tiles_that_do_not_cover_the_output_or_lack_devices_are_refused() -> None:
    graph, spatial = conv_chain([2, 2], 8, 4)
    times = {d: {"conv1": 0.1} for d in ("A", "B")}
    with pytest.raises(PlanError, match="cover"):
        tiled_stage_cost(graph, spatial, [Region.of(0, 4, 0, 4)], ["A"], times, two_devices(), "A", "A")
    with pytest.raises(PlanError, match="2 tiles need one device each"):
        tiled_stage_cost(graph, spatial, equal_grid(8, 4, 2, 1), ["A"], times, two_devices(), "A", "A")
