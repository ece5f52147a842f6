"""A plan compiled into what one request does: stages to compute, hops to send, and their order.

The hops are `coinfer.cost.evaluate.list_transfers` itself, so the simulator sends exactly the
messages the cost model counts: each value once to every other device that reads it, then the
model's outputs back to the origin, each with the raw and wire bytes and codec time the cost model
gives it. A stage depends on the hops that bring it values from other devices; a device runs the
stages of one request in plan order (as the runtime does, coinfer.runtime.routing).

`serial_steps` is the cost model's own order: every stage and hop of a request one after another
(L = L_c + L_t), each hop right after the stage that produced its value, the results last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coinfer.cost.breakdown import Transfer
from coinfer.cost.evaluate import list_transfers
from coinfer.errors import PlanError
from coinfer.plan import Plan
from coinfer.problem import Problem

INPUT_STAGE = -1  # the "stage" that produces the graph inputs: the client, at the origin


@dataclass(frozen=True)
class SimStage:
    """Stage `index` of the plan: its nodes on `device` and their profiled time (factor 1)."""

    index: int
    device: str
    node_ids: tuple[str, ...]
    work_s: float


@dataclass(frozen=True)
class SimHop:
    """One message: `transfer` (as the cost model lists it), sent when stage `after` has ended."""

    index: int
    transfer: Transfer
    after: int  # the producing stage's index, INPUT_STAGE for a graph input


@dataclass(frozen=True)
class Step:
    kind: Literal["stage", "hop"]
    index: int


@dataclass(frozen=True)
class Program:
    """Everything one request under `plan` does; `needs[i]` are the hops stage i waits for."""

    plan: Plan
    stages: tuple[SimStage, ...]
    hops: tuple[SimHop, ...]
    needs: tuple[tuple[int, ...], ...]
    previous_on_device: tuple[int, ...]  # the stage before it on its device, INPUT_STAGE for none
    result_hops: tuple[int, ...]
    serial_steps: tuple[Step, ...]


def compile_plan(plan: Plan, problem: Problem) -> Program:
    """The program of one request under `plan` (see the module docstring)."""
    stages = tuple(SimStage(i, s.device, s.node_ids, sum(problem.node_time_s[s.device][n] for n in s.node_ids))
                   for i, s in enumerate(plan.stages))
    stage_of = {n: s.index for s in stages for n in s.node_ids}
    hops = tuple(SimHop(k, t, stage_of.get(t.tensor, INPUT_STAGE))
                 for k, t in enumerate(list_transfers(plan, problem)))
    missing = sorted({f"{h.transfer.source}->{h.transfer.target}" for h in hops
                      if problem.cluster.link(h.transfer.source, h.transfer.target) is None})
    if missing:
        raise PlanError(f"plan {plan} sends values over link(s) {', '.join(missing)}, which cluster "
                        f"{problem.cluster.name!r} lacks; place the nodes so that every hop has a direct link")
    needs: list[tuple[int, ...]] = []
    for stage in stages:
        reads = {v for n in stage.node_ids for v in problem.graph.node(n).inputs}
        # The first hop of a value to this device brings it; a second one (a graph output that is
        # also read here) is the result's return and is waited for by the client, not a stage.
        brought: dict[str, int] = {}
        for h in hops:
            if h.transfer.target == stage.device and not h.transfer.is_result:
                brought.setdefault(h.transfer.tensor, h.index)
        needs.append(tuple(brought[v] for v in sorted(reads) if v in brought))
    last_on: dict[str, int] = {}
    previous: list[int] = []
    for stage in stages:
        previous.append(last_on.get(stage.device, INPUT_STAGE))
        last_on[stage.device] = stage.index
    return Program(plan, stages, hops, tuple(needs), tuple(previous),
                   tuple(h.index for h in hops if h.transfer.is_result), _serial(stages, hops))


def _serial(stages: tuple[SimStage, ...], hops: tuple[SimHop, ...]) -> tuple[Step, ...]:
    steps = [Step("hop", h.index) for h in hops if h.after == INPUT_STAGE and not h.transfer.is_result]
    for stage in stages:
        steps.append(Step("stage", stage.index))
        steps += [Step("hop", h.index) for h in hops if h.after == stage.index and not h.transfer.is_result]
    steps += [Step("hop", h.index) for h in hops if h.transfer.is_result]
    return tuple(steps)


def first_positions(plan: Plan, devices: tuple[str, ...]) -> dict[str, int]:
    """The topological position of the first node on each of `devices` (the node count when it
    runs none): the "cut in use" of a timeline. For a chain split origin [0, i) | fog [i, j) |
    cloud [j, N) with both servers used it is the paper's (i, j) as {fog: i, cloud: j}; for any
    plan it moves when the plan moves work between devices."""
    n = len(plan.graph.nodes)
    first = {d: n for d in devices}
    for k, node in enumerate(plan.graph.nodes):
        device = plan.placement[node.id]
        if device in first:
            first[device] = min(first[device], k)
    return first
