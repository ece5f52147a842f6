"""Solve at block granularity, place at op granularity.

A captured op graph names the block (residual block, inverted residual, Inception module,
transformer layer) each node belongs to. `block_view` contracts every block into one node
(`graph.coarsen_to_blocks`), gives it the sum of its members' times on each device, and maps a
plan of the block graph back to the op graph: every op runs where its block runs.

What it is for: a re-solve that must answer within milliseconds (`adapt.policies.resolve`).
MobileNetV2's 153 ops on three devices are an ILP whose LP relaxation alone takes HiGHS about
20 ms; its 17 blocks and 10 other ops form a chain of 27 nodes, which `chain-dp` solves exactly
(a whole look of `resolve` then takes about 4 ms, benchmarks/adapt_decision_speed.py). The
optimum over plans that keep blocks whole is not always the op-level optimum, so the op plan is
costed again by `cost.evaluate` where it is compared (a block node sends the union of what its
members send out, which can count a value to a device that only one member's reader needs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from coinfer.graph import Graph, coarsen_to_blocks
from coinfer.plan import Plan
from coinfer.problem import Problem


@dataclass(frozen=True)
class BlockView:
    """The block-granularity problem of an op-granularity one, and the way back."""

    problem: Problem
    op_graph: Graph
    members: Mapping[str, tuple[str, ...]]  # block-graph node -> the op nodes it contracts

    def expand(self, plan: Plan) -> Plan:
        """The op-granularity plan that runs every op where `plan` runs its block."""
        placement = {op: plan.placement[node] for node, ops in self.members.items() for op in ops}
        return Plan(self.op_graph, placement, plan.solver)


def block_view(problem: Problem) -> BlockView | None:
    """`problem` at block granularity; None when its graph has no blocks to contract."""
    graph = problem.graph
    blocks = graph.blocks
    if graph.granularity == "block" or not blocks:
        return None
    coarse = coarsen_to_blocks(graph)
    members = {n.id: blocks.get(n.id, (n.id,)) for n in coarse.nodes}
    times = {device: {node: sum(per_op[op] for op in ops) for node, ops in members.items()}
             for device, per_op in problem.node_time_s.items()}
    return BlockView(dataclasses.replace(problem, graph=coarse, node_time_s=times), graph, members)
