"""`coedge`: CoEdge's workload split, rows in proportion to what each device can do, energy-minimal under a deadline.

Paper (Zeng, Chen, Zhou, Yang, Zhu, ToN 2021; REFERENCE.md section 6): the requester splits a CNN's
convolutional layers into horizontal strips that the devices around it compute in parallel,
trading halos with their neighbours layer by layer, with the strip heights chosen by a linear
program that minimises energy while the slowest device still meets the deadline (energy -25.5%
to -66.9% at similar latency on four CNNs).

Here: the range is the first tileable segment of the model (coinfer.solve.tiled_ranges), cut at
each of its ends where the map has just shrunk; the origin (the requester) scatters, gathers and
runs the rest. The strip heights are integer rows r_i >= 0 of the range's H output rows, from the
MILP (scipy.optimize.milp, HiGHS)

    minimise  sum_i (a_i r_i / H + b_i z_i)            energy: compute and transmission
    s.t.      sum_i r_i = H,  z_i <= r_i <= H z_i,     z_i = 1 when device i takes part
              c_i r_i / H + d_i z_i <= deadline       each device's time for its strip

with `linear_model`'s coefficients: a_i = P_i T_i + p_i (input + output bytes) / B_i (T_i the range's
time on device i, P_i its busy power, p_i and B_i the transmit power and bandwidth of its link to
the origin: none for the origin itself), c_i = T_i + (input + output bytes) / B_i, and per
participant the latencies of the crop, the output strip and two halos per window op (d_i, with
their transmit energy in b_i; the halos' bytes are the op's window overlap across the map's width).
The model is linear in the rows and ignores the waits between layers, so the plan it picks is then
priced by `cost.evaluate` in halo-exchange mode; when that misses the deadline the MILP is solved
again with the deadline scaled by the shortfall (up to `CALIBRATION_ROUNDS` times).

The deadline is the problem's (`--deadline`, less what the model outside the range takes on the
origin) or, without one, the fastest single device's time for the range (CoEdge's "similar
latency"). CoEdge minimises energy whatever the problem's objective; the plan is reported under the
problem's objective. When no split meets the deadline the MILP minimises the slowest device's time
instead, and among plans that all miss the deadline the fastest wins.
`linear_optimum_by_enumeration` solves the same model by trying every split: the test that the MILP is exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint

from coinfer.cluster import Link
from coinfer.cost import terms
from coinfer.cost.evaluate import evaluate
from coinfer.errors import PlanError
from coinfer.graph import Graph
from coinfer.plan import Plan, all_on
from coinfer.problem import Problem
from coinfer.solve.highs import milp
from coinfer.solve.tiled_ranges import (
    first_segment,
    range_ends,
    range_input,
    range_time_s,
    reachable_tile_devices,
    tiled_plan,
)
from coinfer.tiling.bounds import SpatialRange
from coinfer.tiling.program_ops import cached_spatial_range

CALIBRATION_ROUNDS = 4


@dataclass(frozen=True)
class LinearModel:
    """CoEdge's per-device coefficients over the range's H output rows (module docstring)."""

    devices: tuple[str, ...]
    rows: int
    energy_per_share_j: np.ndarray  # a_i
    energy_fixed_j: np.ndarray  # b_i
    time_per_share_s: np.ndarray  # c_i
    time_fixed_s: np.ndarray  # d_i

    def time_s(self, rows: Sequence[int]) -> np.ndarray:
        r = np.asarray(rows, dtype=float)
        out: np.ndarray = self.time_per_share_s * r / self.rows + self.time_fixed_s * (r > 0)
        return out

    def energy_j(self, rows: Sequence[int]) -> float:
        r = np.asarray(rows, dtype=float)
        return float(np.sum(self.energy_per_share_j * r / self.rows + self.energy_fixed_j * (r > 0)))


def coedge(problem: Problem) -> Plan:
    graph, origin = problem.graph, problem.origin
    segment = first_segment(graph, "coedge")
    base = dict(all_on(graph, origin).placement)
    fallback = all_on(graph, origin, "coedge")
    best: tuple[tuple[bool, float], Plan] = (_key(fallback, problem), fallback)
    devices = reachable_tile_devices(problem, origin, origin)
    for stop in range_ends(graph, segment, segment.start):
        model = linear_model(problem, segment.start, stop, devices)
        deadline = _range_deadline(problem, model, segment.start, stop)
        target = deadline
        for _ in range(CALIBRATION_ROUNDS):
            rows = solve_split(model, target)
            range_s = math.inf
            for plan in _strips(problem, base, segment.start, stop, model, rows):
                b = evaluate(plan, problem)
                plan_range_s = b.tiled_stages[0].latency_s if b.tiled_stages else b.stages[0].compute_s
                range_s = min(range_s, plan_range_s)
                late = not b.feasible or plan_range_s > deadline * (1 + 1e-9)
                key = (late, b.latency_s if late else b.energy_j)  # nothing in time: the fastest
                if key < best[0]:
                    best = (key, plan)
            if range_s <= deadline * (1 + 1e-9) or not math.isfinite(range_s):
                break
            target *= deadline / range_s
    winner = best[1]
    return Plan(graph, winner.placement, "coedge", evaluate(winner, problem).objective_value,
                tilings=winner.tilings)


def linear_model(problem: Problem, start: int, stop: int, devices: Sequence[str]) -> LinearModel:
    """The coefficients of the MILP for the range start..stop over `devices` (module docstring)."""
    graph, cluster, origin = problem.graph, problem.cluster, problem.origin
    spatial = cached_spatial_range(graph, graph.nodes[start].id, graph.nodes[stop].id)
    height = spatial.output_size[0]
    moved = graph.tensor_bytes(range_input(graph, start)) + graph.nodes[stop].output_bytes
    halo_bytes = _halo_bytes_per_window(graph, spatial, start, stop)
    a, b, c, d = [], [], [], []
    for name in devices:
        device = cluster.device(name)
        t = range_time_s(problem, start, stop, name)
        link = cluster.link(origin, name) if name != origin else None
        move_s = moved / link.bytes_per_s if link is not None else 0.0
        fixed_s = 2 * (link.latency_s + link.overhead_s) if link is not None else 0.0
        neighbour = _slowest_link(problem, name, devices)
        halo_s = sum(terms.transfer_time_s(neighbour, 2 * h) for h in halo_bytes) if neighbour else 0.0
        link_power = link.power_w if link is not None else 0.0
        halo_power = neighbour.power_w if neighbour is not None else 0.0
        a.append(terms.compute_energy_j(device, t) + link_power * move_s)
        c.append(t + move_s)
        b.append(halo_power * sum(2 * h / neighbour.bytes_per_s for h in halo_bytes) if neighbour else 0.0)
        d.append(fixed_s + halo_s)
    return LinearModel(tuple(devices), height, np.array(a), np.array(b), np.array(c), np.array(d))


def solve_split(model: LinearModel, deadline_s: float) -> tuple[int, ...]:
    """Rows per device minimising energy with every device within `deadline_s`; when no split can,
    the split minimising the slowest device's time."""
    n, height = len(model.devices), model.rows
    shares = model.time_per_share_s / height
    # variables: r_0..r_{n-1} (rows), z_0..z_{n-1} (takes part)
    eye = np.eye(n)
    rows_sum = np.concatenate([np.ones(n), np.zeros(n)])[None, :]
    upper = np.hstack([eye, -height * eye])  # r_i - H z_i <= 0
    lower = np.hstack([-eye, eye])  # z_i - r_i <= 0
    timing = np.hstack([np.diag(shares), np.diag(model.time_fixed_s)])
    constraints = [LinearConstraint(rows_sum, height, height), LinearConstraint(upper, -np.inf, 0),
                   LinearConstraint(lower, -np.inf, 0), LinearConstraint(timing, -np.inf, deadline_s)]
    bounds = Bounds(np.zeros(2 * n), np.concatenate([np.full(n, height), np.ones(n)]))
    cost = np.concatenate([model.energy_per_share_j / height, model.energy_fixed_j])
    res = milp(cost, constraints=constraints, integrality=np.ones(2 * n), bounds=bounds)
    if res.status == 0:
        return tuple(round(v) for v in res.x[:n])
    # the slowest device's time T as one more variable: minimise T with every device's time <= T
    timing_t = np.hstack([timing, -np.ones((n, 1))])
    pad = np.zeros((1, 1))
    res = milp(np.concatenate([np.zeros(2 * n), [1.0]]),
               constraints=[LinearConstraint(np.hstack([rows_sum, pad]), height, height),
                            LinearConstraint(np.hstack([upper, np.zeros((n, 1))]), -np.inf, 0),
                            LinearConstraint(np.hstack([lower, np.zeros((n, 1))]), -np.inf, 0),
                            LinearConstraint(timing_t, -np.inf, 0)],
               integrality=np.concatenate([np.ones(2 * n), [0]]),
               bounds=Bounds(np.zeros(2 * n + 1), np.concatenate([np.full(n, height), np.ones(n), [np.inf]])))
    if res.status != 0:
        raise PlanError(f"coedge: HiGHS found no split of the range's {height} rows ({res.message})")
    return tuple(round(v) for v in res.x[:n])


def linear_optimum_by_enumeration(model: LinearModel, deadline_s: float) -> tuple[float, tuple[int, ...]] | None:
    """The energy-minimal split meeting the deadline by trying every split (small cases: the MILP's check)."""
    best: tuple[float, tuple[int, ...]] | None = None
    n, height = len(model.devices), model.rows
    for cuts in itertools.combinations_with_replacement(range(height + 1), n - 1):
        bounds = (0, *cuts, height)
        rows = tuple(bounds[i + 1] - bounds[i] for i in range(n))
        if np.all(model.time_s(rows) <= deadline_s + 1e-12):
            energy = model.energy_j(rows)
            if best is None or energy < best[0] - 1e-15:
                best = (energy, rows)
    return best


def _strips(problem: Problem, base: dict[str, str], start: int, stop: int, model: LinearModel,
            rows: Sequence[int]) -> list[Plan]:
    """The split as strips in the cluster's device order, gathered on the origin with the rest of the
    model there, or on the device with the most rows with the rest there (CoEdge leaves the layers
    after the convolutions to one device)."""
    taking = [(d, r) for d, r in zip(model.devices, rows, strict=True) if r > 0]
    out = []
    for gather in dict.fromkeys([problem.origin, max(taking, key=lambda t: t[1])[0]]):
        try:
            out.append(tiled_plan(problem, base, start, stop, [d for d, _ in taking], (len(taking), 1), gather,
                                  "halo", after=gather, row_sizes=tuple(r for _, r in taking), solver="coedge"))
        except PlanError:
            continue
    return out


def _range_deadline(problem: Problem, model: LinearModel, start: int, stop: int) -> float:
    if problem.constraints.deadline_s is not None:
        outside = sum(problem.node_time_s[problem.origin][n.id] for i, n in enumerate(problem.graph.nodes)
                      if not start <= i <= stop)
        return max(problem.constraints.deadline_s - outside, 1e-9)
    alone = model.time_per_share_s + model.time_fixed_s
    return float(np.min(alone))


def _key(plan: Plan, problem: Problem) -> tuple[bool, float]:
    b = evaluate(plan, problem)
    return (False, b.energy_j) if b.feasible else (True, b.latency_s)


def _halo_bytes_per_window(graph: Graph, spatial: SpatialRange, start: int, stop: int) -> list[float]:
    """Per window op, the bytes one neighbour sends the other: its overlap rows across the input's width."""
    channels = {spatial.input: _channels(graph.inputs[0].spec.shape) if start == 0 else
                _channels(graph.nodes[start - 1].outputs[0].shape if graph.nodes[start - 1].outputs else None)}
    for node in graph.nodes[start:stop + 1]:
        for name in node.source_nodes:  # an op's channels: its node's output's (one op per node when captured)
            channels[name] = _channels(node.outputs[0].shape if node.outputs else None)
    out = []
    for op in spatial.ops:
        if op.kind != "window" or op.window is None:
            continue
        overlap = max(op.window.rows.extent - op.window.rows.stride, 0)
        if overlap:  # float32 elements, the overlap split between the two neighbours
            out.append(overlap * op.input_size[1] * channels.get(op.inputs[0], 1) * 4 / 2)
    return out


def _channels(shape: tuple[int, ...] | None) -> int:
    return shape[1] if shape is not None and len(shape) == 4 else 1


def _slowest_link(problem: Problem, device: str, devices: Sequence[str]) -> Link | None:
    links = [lk for other in devices if other != device
             if (lk := problem.cluster.link(device, other)) is not None]
    return min(links, key=lambda lk: lk.bytes_per_s) if links else None
