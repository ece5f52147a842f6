"""A plan compiled into what one request does: stages to compute, hops to send, and their order.

The hops are `coinfer.cost.evaluate.list_transfers` itself, so the simulator sends exactly the
messages the cost model counts: each value once to every other device that reads it, then the
model's outputs back to the origin, each with the raw and wire bytes and codec time the cost model
gives it. A stage depends on the hops that bring it values from other devices; a device runs the
stages of one request in plan order (as the runtime does, coinfer.runtime.routing).

`serial_steps` is the cost model's own order: every stage and hop of a request one after another
(L = L_c + L_t), each hop right after the stage that produced its value, the results last.

A plan with tiled stages is simulated as the runtime runs it: lowered to crop, tile, halo and stitch
stages over the expanded graph (coinfer.runtime.packaging.tiled_program), each tile a stage on its
device and each crop, halo and output tile a hop. Each tiled stage is a *section* of the program:
in the serial order it is one step, within which its stages and hops run in dataflow order (tiles
in parallel, each message on its link), as cost.evaluate prices a tiled stage by its schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

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
    kind: Literal["stage", "hop", "section"]
    index: int


@dataclass(frozen=True)
class Section:
    """The stages and hops a tiled stage became, run in dataflow order as one serial step."""

    stages: frozenset[int]
    hops: frozenset[int]


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
    sections: tuple[Section, ...] = ()


def compile_plan(plan: Plan, problem: Problem) -> Program:
    """The program of one request under `plan` (see the module docstring)."""
    original, node_sections = plan, cast("tuple[frozenset[str], ...]", ())
    if plan.tilings:
        plan, problem, node_sections = _lowered(plan, problem)
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
    sections = tuple(_section(ids, stages, hops) for ids in node_sections)
    return Program(original, stages, hops, tuple(needs), tuple(previous),
                   tuple(h.index for h in hops if h.transfer.is_result), _serial(stages, hops, sections), sections)


def _lowered(plan: Plan, problem: Problem) -> tuple[Plan, Problem, tuple[frozenset[str], ...]]:
    # the runtime's lowering, so the simulator and the workers run the same stages and hops
    from coinfer.runtime.deploy import lowering
    from coinfer.runtime.packaging import packager_for

    lowered, _ = lowering(plan, problem, packager_for(problem.graph))
    return lowered.plan, lowered.problem, lowered.sections


def _section(node_ids: frozenset[str], stages: tuple[SimStage, ...], hops: tuple[SimHop, ...]) -> Section:
    inside = frozenset(s.index for s in stages if set(s.node_ids) <= node_ids)
    stitch = max(inside)  # the last stage of the section stitches; what it sends belongs to the plan
    return Section(inside, frozenset(h.index for h in hops if h.after in inside - {stitch}
                                     and not h.transfer.is_result))


def _serial(stages: tuple[SimStage, ...], hops: tuple[SimHop, ...],
            sections: tuple[Section, ...] = ()) -> tuple[Step, ...]:
    section_of = {i: k for k, sec in enumerate(sections) for i in sec.stages}
    in_section = {h for sec in sections for h in sec.hops}
    steps = [Step("hop", h.index) for h in hops if h.after == INPUT_STAGE and not h.transfer.is_result]
    for stage in stages:
        if stage.index in section_of:
            k = section_of[stage.index]
            if stage.index == min(sections[k].stages):
                steps.append(Step("section", k))
            if stage.index != max(sections[k].stages):
                continue
        else:
            steps.append(Step("stage", stage.index))
        steps += [Step("hop", h.index) for h in hops if h.after == stage.index and not h.transfer.is_result
                  and h.index not in in_section]
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
