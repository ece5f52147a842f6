"""The price of a halo-exchange tiled stage (tiled_stage_cost(mode="halo")), worked out by hand.

Same hand-written chains of 3x3 'same' convolutions as test_tile_cost.py (no torch), so each figure
follows from the sizes in a comment: owned parts only, one message per halo between devices, and a
tile that starts an op only once the halos it reads have arrived.
"""

from __future__ import annotations

import pytest

from coinfer.cluster import Cluster, Device, Link
from coinfer.cost.tiled_stage import tiled_stage_cost
from coinfer.errors import PlanError
from coinfer.tiling import Region, equal_grid
from tests.tiling.test_tile_cost import conv_chain, two_devices


def test_a_two_convolution_chain_in_two_strips_trading_halos_costs_what_is_worked_out_by_hand() -> None:
    # 8 x 4 map; input 2 channels (8 B a position), conv1 -> 4 channels (16 B), conv2 -> 2 channels (8 B);
    # conv1 takes 0.064 s on the whole map, conv2 0.032 s. Links 1000 B/s, 10 ms latency, 0.5 W transmit.
    graph, spatial = conv_chain([2, 4, 2], 8, 4)
    times = {d: {"conv1": 0.064, "conv2": 0.032} for d in ("A", "B")}
    grid = equal_grid(8, 4, 2, 1)
    cost = tiled_stage_cost(graph, spatial, grid, ["A", "B"], times, two_devices(), "A", "A", mode="halo")
    t0, t1 = cost.tiles
    # 3x3 'same' windows keep the cut at row 4 in every map. Tile 1's scatter crop: its input rows [4, 8)
    # plus the input's halo row 3: 20 positions * 8 B = 160 B, 0.01 + 0.16 = 0.17 s
    assert t1.input_region == Region.of(3, 8, 0, 4) and t1.input_bytes == 160
    assert t1.input_ready_s == pytest.approx(0.17) and t0.input_ready_s == 0.0
    # conv1 on owned rows only: 16 / 32 * 0.064 = 0.032 s; A ends it at 0.032, B at 0.202.
    # Halos of conv1's output: one row * 4 columns * 16 B = 64 B, 0.074 s each way.
    # A -> B is ready at 0.032, but the link A->B carries the crop's bytes until 0.16 (FIFO): it arrives
    # at 0.16 + 0.074 = 0.234. B -> A leaves at 0.202 and arrives at 0.276. conv2 (0.016 s on owned
    # rows) waits for each tile's halo: A 0.276 -> 0.292, B 0.234 -> 0.25.
    assert t0.compute_start_s == 0.0 and t0.compute_end_s == pytest.approx(0.292)
    assert t1.compute_start_s == pytest.approx(0.17) and t1.compute_end_s == pytest.approx(0.25)
    assert t0.compute_s == t1.compute_s == pytest.approx(0.048)
    assert t0.halo_received_bytes == t1.halo_received_bytes == 64
    # B's output tile, 16 positions * 8 B = 128 B, 0.138 s, is ready at 0.25 but queues behind B's halo on
    # the link B->A (its bytes until 0.202 + 0.064 = 0.266): at A at 0.404 (fused mode: 0.396)
    assert t1.output_ready_s == pytest.approx(0.404) and cost.latency_s == pytest.approx(0.404)
    assert (cost.scatter_bytes, cost.gather_bytes, cost.halo_bytes, cost.moved_bytes) == (160, 128, 128, 416)
    assert (cost.messages, cost.halo_messages) == (4, 2)
    assert cost.redundancy == 1.0 and cost.redundancy_by_node == pytest.approx({"conv1": 1.0, "conv2": 1.0})
    # energy: A 0.048 s at 2 W, its crop 0.17 s and halo 0.074 s at 0.5 W; B 0.048 s at 3 W, halo and output tile
    assert cost.devices["A"].energy_j == pytest.approx(0.096 + 0.085 + 0.037)
    assert cost.devices["B"].energy_j == pytest.approx(0.144 + 0.037 + 0.069)
    assert cost.devices["B"].received_bytes == 160 + 64


def test_halo_exchange_computes_fewer_positions_but_sends_more_messages_than_fused_tiles_on_a_deep_range() -> None:
    graph, spatial = conv_chain([4] * 9, 24, 24)  # eight 3x3 convolutions
    names = [f"d{i}" for i in range(9)]
    cluster = Cluster("lan", tuple(Device(n, "edge", 1e9, origin=n == "d0") for n in names),
                      tuple(Link(a, b, 1e8, latency_s=1e-3) for a in names for b in names if a != b))
    times = {n: {node.id: 0.1 for node in graph.nodes} for n in names}
    grid = equal_grid(24, 24, 3, 3)
    fused = tiled_stage_cost(graph, spatial, grid, names, times, cluster, "d0", "d0")
    halo = tiled_stage_cost(graph, spatial, grid, names, times, cluster, "d0", "d0", mode="halo")
    assert sum(t.computed_positions for t in halo.tiles) == 8 * 24 * 24 < sum(t.computed_positions for t in fused.tiles)
    assert halo.redundancy == 1.0 < fused.redundancy
    assert sum(t.compute_s for t in halo.tiles) == pytest.approx(0.8)  # the range once: 8 * 0.1 s
    assert sum(t.compute_s for t in fused.tiles) > 0.8
    # fused: 8 crops + 8 output tiles. Halo: also, per convolution but the first (its input's halo comes
    # with the crop), every pair of the 3x3 grid's tiles that touch, edge or corner, each way: 2 * 20
    assert fused.messages == 16 and halo.messages == 16 + 7 * 40 and halo.halo_messages == 280


def test_tiles_on_one_device_trade_halos_without_messages() -> None:
    graph, spatial = conv_chain([2, 2, 2], 8, 4)
    times = {d: {"conv1": 0.1, "conv2": 0.1} for d in ("A", "B")}
    cost = tiled_stage_cost(graph, spatial, equal_grid(8, 4, 2, 1), ["A", "A"], times, two_devices(), "A", "A",
                            mode="halo")
    assert cost.messages == cost.halo_bytes == 0
    assert cost.latency_s == pytest.approx(0.2)  # the device computes each conv once, half after half


def test_halo_mode_needs_a_grid_and_links_between_the_tile_devices() -> None:
    graph, spatial = conv_chain([2, 2, 2], 8, 4)
    times = {d: {"conv1": 0.1, "conv2": 0.1} for d in ("S", "B", "C")}
    cluster = Cluster("star", tuple(Device(n, "edge", 1e9, origin=n == "S") for n in ("S", "B", "C")),
                      tuple(Link(a, b, 8000.0) for a, b in (("S", "B"), ("B", "S"), ("S", "C"), ("C", "S"))))
    with pytest.raises(PlanError, match=r"halo of 'conv2d_1'.*no link C->B"):
        tiled_stage_cost(graph, spatial, equal_grid(8, 4, 2, 1), ["B", "C"], times, cluster, "S", "S", mode="halo")
    with pytest.raises(PlanError, match="give a TileGrid"):
        tiled_stage_cost(graph, spatial, [Region.of(0, 8, 0, 4)], ["B"], times, cluster, "S", "S", mode="halo")


def test_a_block_node_whose_convolutions_trade_halos_is_timed_op_by_op() -> None:
    # One node ("block") owning both convolutions, as `--granularity block` makes resnet18's basic
    # blocks: conv2 reads conv1's halo inside the node. With the block's 0.096 s shared by positions
    # (32 each: 0.048 a convolution), the schedule equals the two-node chain with 0.048 s each.
    # Equal channels throughout: a halo's bytes come from its value's node's spec, and inside a block
    # only the block's output has one.
    from dataclasses import replace

    from coinfer.graph import Graph

    graph, spatial = conv_chain([2, 2, 2], 8, 4)
    conv1, conv2 = graph.nodes
    block = replace(conv2, id="block", inputs=conv1.inputs, param_bytes=conv1.param_bytes + conv2.param_bytes,
                    source_nodes=("conv2d_1", "conv2d_2"))
    block_graph = Graph("block", graph.inputs, (block,))
    block_range = replace(spatial, ops=tuple(replace(op, owner="block") for op in spatial.ops))
    grid = equal_grid(8, 4, 2, 1)
    split = tiled_stage_cost(graph, spatial, grid, ["A", "B"], {d: {"conv1": 0.048, "conv2": 0.048} for d in "AB"},
                             two_devices(), "A", "A", mode="halo")
    whole = tiled_stage_cost(block_graph, block_range, grid, ["A", "B"], {d: {"block": 0.096} for d in "AB"},
                             two_devices(), "A", "A", mode="halo")
    assert whole.halo_messages == split.halo_messages == 2
    assert whole.latency_s == pytest.approx(split.latency_s)
    for a, b in zip(whole.tiles, split.tiles, strict=True):
        assert (a.compute_start_s, a.compute_end_s, a.output_ready_s) == pytest.approx(
            (b.compute_start_s, b.compute_end_s, b.output_ready_s))
