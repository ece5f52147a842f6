"""exo's split: consecutive parts of the model in proportion to each device's memory (a baseline).

exo (exo-explore/exo, its ring memory-weighted partitioning) orders the devices by memory, largest
first, and gives each a contiguous share of the layers equal to its share of the total memory; it
looks at neither compute nor bandwidth, so the slowest device sets the pace (../shared/REFERENCE.md
section 8). Here the shares are of the graph's parameter bytes, in topological order: a node goes
to the device whose share of the memory covers the middle of the node's parameters (for a stack of
equal layers, exo's own rule; a node without parameters goes with the node before it). Devices
of unknown memory count as the largest known one. O(nodes + devices log devices).
"""

from __future__ import annotations

import math

from coinfer.plan import Plan
from coinfer.problem import Problem


def memory_share(problem: Problem) -> Plan:
    devices = list(problem.cluster.devices)
    known = [d.memory_bytes for d in devices if math.isfinite(d.memory_bytes)]
    fallback = max(known) if known else 1.0
    memory = {d.name: d.memory_bytes if math.isfinite(d.memory_bytes) else fallback for d in devices}
    order = sorted(memory, key=lambda name: -memory[name])  # largest first; sorted() keeps cluster order on ties
    total_memory = sum(memory.values())
    bounds, upto = [], 0.0
    for name in order:
        upto += memory[name] / total_memory
        bounds.append((upto, name))
    total_params = sum(n.param_bytes for n in problem.graph.nodes) or 1
    placement: dict[str, str] = {}
    done, device = 0, order[0]
    for node in problem.graph.nodes:
        if node.param_bytes:
            middle = (done + node.param_bytes / 2) / total_params
            device = next((name for bound, name in bounds if middle <= bound), order[-1])
            done += node.param_bytes
        placement[node.id] = device
    return Plan(problem.graph, placement, solver="exo")
