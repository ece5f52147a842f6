"""The estimate REAP scores every split with, for all splits (i, j) at once (numpy).

Paper: Deng, Butkus, Lapkovskis, Donta, arXiv 2605.09623 (REFERENCE section 4, step 3). Over a chain
(origin, fog, cloud) the split (i, j), 0 <= i <= j <= N, runs nodes [0, i) of the topological order
on the origin, [i, j) on the fog and [j, N) on the cloud. Its estimate:

- compute: t_d = sigma_d * (sum of W_d over the node range on d), with W_d[k] = T_d[k] / sum_k T_d[k]
  the profile's relative weights. The paper keeps one W for all devices; coinfer has a profile
  per device, so each device gets its own W_d (the paper's case when the profiles are
  proportional). sigma_d = sum_k T_d[k] reproduces the profile; REAP refits sigma from
  measured stage times.
- transfers: each hop costs omega + b / beta on its link (omega = latency + overhead, beta the
  bandwidth in bytes/s), counted exactly as `cost.evaluate` counts them (each value sent once to
  each other device reading it, directly, and every graph output returned to the origin), so a
  DAG is handled too. The paper's L has no return hop (a classifier output is a few KB); we add
  it because the runtime sends it, and a split that needs a missing link costs infinity, which
  drops it (a cluster whose cloud has no link back to the edge never uses the cloud).
- energy: each device's busy power (the edge's fixed power in the paper: 12 W) times its compute
  time, plus the sender's transmit power times its hop time, plus the edge's idle power while it
  waits for the answer (`cost.terms`' model).

How: per link, the messages and bytes each split sends form a few rectangles in the (i, j) plane
(a value produced at position p and read at r crosses origin -> fog when r_prev < i <= r < j, and
so on); they are summed with a 2-D difference array, so building the tables is O(N^2 + E) time
once per graph and scoring all (N+1)(N+2)/2 splits is a few vectorised passes. Memory is
O(N^2): 20 MB of tables for 500 nodes, so coarsen a graph of thousands of nodes to blocks first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from coinfer.cluster import Cluster
from coinfer.cost import evaluate, terms
from coinfer.graph import Graph
from coinfer.plan import Plan
from coinfer.problem import Problem

# The directed links a contiguous split can use, as (from, to) positions in the chain: the three
# forward cuts, then the result's return from the fog and from the cloud.
HOPS = ((0, 1), (0, 2), (1, 2), (1, 0), (2, 0))

Split = tuple[int, int]


@dataclass(frozen=True)
class Estimate:
    """Latency, origin energy and total energy, as arrays over splits (i, j) or as numbers."""

    latency_s: np.ndarray
    edge_energy_j: np.ndarray
    total_energy_j: np.ndarray


@dataclass(frozen=True, eq=False)
class ChainModel:
    """What REAP's estimate needs from the graph and the profile (fixed while serving)."""

    graph: Graph
    devices: tuple[str, str, str]
    weight: Mapping[str, np.ndarray]  # device -> W_d over the topological order
    cum_weight: np.ndarray  # (3, N+1): prefix sums of W_d
    profile_sigma: tuple[float, float, float]  # sum_k T_d[k]: the sigma that reproduces the profile
    messages: np.ndarray  # (len(HOPS), N+1, N+1): messages over each hop for split (i, j)
    sent_bytes: np.ndarray  # (len(HOPS), N+1, N+1)
    valid: np.ndarray  # (N+1, N+1): i <= j

    @classmethod
    def build(cls, problem: Problem, devices: tuple[str, str, str]) -> ChainModel:
        graph = problem.graph
        times = np.array([[problem.node_time_s[d][v.id] for v in graph.nodes] for d in devices])
        total = times.sum(axis=1)
        weight = times / np.where(total > 0, total, 1.0)[:, None]
        cum = np.concatenate([np.zeros((3, 1)), np.cumsum(weight, axis=1)], axis=1)
        messages, sent = _hop_tables(graph)
        n = len(graph.nodes)
        valid = np.arange(n + 1)[:, None] <= np.arange(n + 1)[None, :]
        return cls(graph, devices, {d: weight[k] for k, d in enumerate(devices)}, cum,
                   (float(total[0]), float(total[1]), float(total[2])), messages, sent, valid)

    @property
    def n(self) -> int:
        return len(self.graph.nodes)

    def runnable(self, cluster: Cluster) -> np.ndarray:
        """(N+1, N+1): valid splits every hop of which has a link."""
        ok = self.valid.copy()
        for h, (a, b) in enumerate(HOPS):
            if cluster.link(self.devices[a], self.devices[b]) is None:
                ok &= self.messages[h] == 0
        return ok

    def estimate(self, sigma: tuple[float, float, float], problem: Problem) -> Estimate:
        """The estimate of every split (see the module docstring); links and powers from `problem`."""
        cw, n = self.cum_weight, self.n
        t_edge = sigma[0] * cw[0][:, None]
        t_fog = sigma[1] * (cw[1][None, :] - cw[1][:, None])
        t_cloud = sigma[2] * (cw[2][n] - cw[2][None, :])
        power = [problem.cluster.device(d).busy_power_w for d in self.devices]
        latency = t_edge + t_fog + t_cloud
        edge = power[0] * t_edge
        total = edge + power[1] * t_fog + power[2] * t_cloud
        with np.errstate(invalid="ignore"):
            for h, (a, b) in enumerate(HOPS):
                link = problem.cluster.link(self.devices[a], self.devices[b])
                used = self.messages[h] > 0
                if link is None:
                    latency = np.where(used, math.inf, latency)
                    continue
                hop_s = np.where(used, self.messages[h] * (link.latency_s + link.overhead_s)
                                 + self.sent_bytes[h] / link.bytes_per_s, 0.0)
                latency = latency + hop_s
                total = total + link.power_w * hop_s
                if a == 0:
                    edge = edge + link.power_w * hop_s
        wait = terms.waiting_energy_j(problem.cluster.device(self.devices[0]), latency, t_edge)
        latency = np.where(self.valid, latency, math.inf)
        return Estimate(latency, edge + wait, total + wait)

    def plan(self, split: Split, solver: str = "reap") -> Plan:
        i, j = split
        d0, d1, d2 = self.devices
        placement = {v.id: d0 if k < i else d1 if k < j else d2 for k, v in enumerate(self.graph.nodes)}
        return Plan(self.graph, placement, solver)

    def split_of(self, plan: Plan) -> Split | None:
        """(i, j) when `plan` is a contiguous origin | fog | cloud split (empty stages allowed)."""
        rank = {d: k for k, d in enumerate(self.devices)}
        ends = [0, 0, 0]
        last = 0
        for k, v in enumerate(self.graph.nodes):
            r = rank.get(plan.placement[v.id], -1)
            if r < last:
                return None
            last = r
            ends[r] = k + 1
        i = ends[0]
        j = max(i, ends[1])
        return i, j

    def estimate_plan(self, plan: Plan, sigma: tuple[float, float, float], problem: Problem) -> Estimate:
        """The same estimate for any plan over these devices (one `cost.evaluate` of scaled times)."""
        times = {d: {v.id: sigma[k] * float(self.weight[d][x]) for x, v in enumerate(self.graph.nodes)}
                 for k, d in enumerate(self.devices)}
        scaled = Problem(problem.graph, problem.cluster, times, problem.objective, problem.constraints)
        b = evaluate(Plan(plan.graph, plan.placement), scaled)
        latency = b.latency_s - b.queueing_s  # the paper's estimate has no queueing term
        return Estimate(np.array(latency), np.array(b.energy_by_device_j[self.devices[0]]), np.array(b.energy_j))


def _hop_tables(graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """Messages and bytes per hop and split, from rectangles in the (i, j) plane (inclusive bounds)."""
    n = len(graph.nodes)
    rects: list[tuple[int, int, int, int, int, float]] = []  # hop, i0, i1, j0, j1, bytes
    values = [(name, -1) for name in (i.name for i in graph.inputs)]
    values += [(v.id, k) for k, v in enumerate(graph.nodes)]
    for value, p in values:
        size = float(graph.tensor_bytes(value))
        readers = sorted({graph.index[c] for c in graph.consumers[value]})
        if not readers:
            continue
        previous = p
        for r in readers:  # origin -> fog: produced before i, first reader at or after i runs before j
            rects.append((0, previous + 1, r, r + 1, n, size))
            previous = r
        rects.append((1, p + 1, n, 0, readers[-1], size))  # origin -> cloud: a reader at or after j
        if p >= 0:
            rects.append((2, 0, p, p + 1, readers[-1], size))  # fog -> cloud: produced in [i, j), read after j
    for out in graph.outputs:
        q, size = graph.index[out], float(graph.node(out).output_bytes)
        rects.append((3, 0, q, q + 1, n, size))  # the result from the fog: i <= q < j
        rects.append((4, 0, q, 0, q, size))  # the result from the cloud: q >= j
    diff = np.zeros((2, len(HOPS), n + 2, n + 2))
    if rects:
        table = np.array(rects)
        h, i0, i1, j0, j1 = (table[:, c].astype(np.intp) for c in range(5))
        for plane, amount in ((0, np.ones(len(rects))), (1, table[:, 5])):
            for di, dj, sign in ((i0, j0, 1.0), (i1 + 1, j0, -1.0), (i0, j1 + 1, -1.0), (i1 + 1, j1 + 1, 1.0)):
                np.add.at(diff[plane], (h, di, dj), sign * amount)
    tables = np.cumsum(np.cumsum(diff, axis=2), axis=3)[:, :, : n + 1, : n + 1]
    return tables[0], tables[1]
