"""Interchangeable devices: servers that no cost can tell apart, so swapping them changes no plan's cost.

Two servers a and b are interchangeable when they are the same device but for the name (speed,
memory, power, prices, failure probability, background load), every node takes the same time on
both, and their links look the same: a -> o and b -> o (and o -> a, o -> b) are equal links for
every other device o, and a -> b equals b -> a. Then swapping a and b in any plan gives a plan of
equal cost, and an exact solver may search only plans in which a runs at least as many nodes as
b: symmetry breaking, which spares branch and bound some of the mirror images of each plan (two
Jetsons in `one-to-multiple`).

Interchangeable members: the shards of a tensor-parallel layer (one parallel group,
`Graph.parallel_groups`) that read the same values, take the same time on every device, hold the
same bytes and output the same bytes to the same join. Swapping two of them between their devices
changes no cost, so an exact solver may search only plans that give them devices in index order.
Swapping devices does not change how many nodes a device runs, so the two rules hold together:
swap devices first, then sort each group's members.
"""

from __future__ import annotations

from dataclasses import replace

from coinfer.cluster import Device, Link
from coinfer.problem import Problem


def interchangeable_groups(problem: Problem) -> list[list[str]]:
    """Groups (in cluster order) of two or more servers that are pairwise interchangeable."""
    groups: list[list[str]] = []
    for device in problem.cluster.servers:
        for group in groups:
            if _interchangeable(problem, group[0], device.name):
                group.append(device.name)
                break
        else:
            groups.append([device.name])
    return [g for g in groups if len(g) > 1]


def interchangeable_members(problem: Problem) -> list[list[str]]:
    """Runs (in graph order) of two or more members of one parallel group that no cost tells apart."""
    graph = problem.graph
    runs: list[list[str]] = []
    for group in graph.parallel_groups.values():
        classes: list[list[str]] = []
        for m in group.members:
            for c in classes:
                if _same_member(problem, c[0], m):
                    c.append(m)
                    break
            else:
                classes.append([m])
        runs.extend(c for c in classes if len(c) > 1)
    return runs


def _same_member(problem: Problem, a: str, b: str) -> bool:
    na, nb = problem.graph.node(a), problem.graph.node(b)
    return (set(na.inputs) == set(nb.inputs) and na.param_bytes == nb.param_bytes
            and na.output_bytes == nb.output_bytes and na.flops == nb.flops
            and all(times[a] == times[b] for times in problem.node_time_s.values()))


def _interchangeable(problem: Problem, a: str, b: str) -> bool:
    cluster = problem.cluster
    if not _same_device(cluster.device(a), cluster.device(b)):
        return False
    if problem.node_time_s.get(a) != problem.node_time_s.get(b):
        return False
    others = [d for d in cluster.device_names if d not in (a, b)]
    same_links = all(_same_link(cluster.link(a, o), cluster.link(b, o)) and
                     _same_link(cluster.link(o, a), cluster.link(o, b)) for o in others)
    return same_links and _same_link(cluster.link(a, b), cluster.link(b, a))


def _same_device(one: Device, other: Device) -> bool:
    return replace(one, name=other.name) == other


def _same_link(one: Link | None, other: Link | None) -> bool:
    if one is None or other is None:
        return one is other
    return replace(one, source=other.source, target=other.target) == other

