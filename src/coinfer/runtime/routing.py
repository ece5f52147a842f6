"""A plan over a program -> what each device runs and where every value goes (pure, no I/O).

Every worker computes the same `route(...)` from the same plan, so no coordinator has to tell
it whom to send to. The rules mirror the cost model (coinfer.cost.evaluate), so a run measures
what was predicted:

- A device runs its stages (maximal runs of the plan's topological order on it) in order.
- A value is sent once to every other device that reads it, however many ops there read it.
- Graph inputs enter at the origin (the client hands them to the origin's worker); the origin
  forwards them like any value it produced. Graph outputs return to the origin, which hands them
  to the client.

A plan lowered for work stealing (coinfer.runtime.stealing) has pooled tiles: their stages leave
the ordered stages of the device they were planned on; every device of the pool holds them as
`pool_stages`, run when their crop arrives; the scatter device hands the crops out (its
`Dispatcher`), and the gather device takes each tile's output from any device of the pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from coinfer.errors import PlanError
from coinfer.plan import Plan
from coinfer.runtime.program import ProgramIndex
from coinfer.runtime.stealing import TilePool, pools_by_role, tile_pools

CLIENT = "<client>"  # the sender of graph inputs and the receiver of results, as a route names it


@dataclass(frozen=True)
class RunStage:
    """One stage of a device: its ops in order, and the values it reads from outside itself.

    `index` is the stage's position in `plan.stages`; `keep` are the values it produces that
    anything outside the stage reads (later stages, other devices, the result).
    """

    index: int
    label: str
    device: str
    node_ids: tuple[str, ...]
    ops: tuple[str, ...]
    needs: frozenset[str]
    keep: tuple[str, ...]


@dataclass(frozen=True)
class DeviceRoute:
    """Everything one device does for a request under one plan."""

    device: str
    stages: tuple[RunStage, ...]
    expects: frozenset[str]  # values other devices (or the client) send here
    sends: Mapping[str, tuple[str, ...]]  # value produced here (or entering here) -> target devices
    results: tuple[str, ...]  # graph outputs this device hands to the client (origin only)
    # value in `expects` -> who may send it (CLIENT: the client); one device, or a pool's devices
    senders: Mapping[str, frozenset[str]] = field(default_factory=dict)
    pool_stages: Mapping[str, RunStage] = field(default_factory=dict)  # crop value -> the pooled tile it feeds
    pools: tuple[TilePool, ...] = ()  # the pools this device scatters, computes tiles of, or gathers

    @property
    def runnable_stages(self) -> tuple[RunStage, ...]:
        """Every stage this device may run: its ordered stages and its pooled tiles."""
        return (*self.stages, *self.pool_stages.values())


def route(plan: Plan, program: ProgramIndex, origin: str) -> dict[str, DeviceRoute]:
    """The route of every device the plan uses, plus the origin's (it always takes part)."""
    owner_device = {}
    for op in program.ops:
        if op.owner not in plan.placement:
            raise PlanError(f"op {op.name!r} belongs to node {op.owner!r}, which the plan does not place; "
                            "the plan was made for another graph of this model")
        owner_device[op.name] = plan.placement[op.owner]
    made_at: dict[str, str] = {v: origin for v in program.graph_inputs}
    made_by: dict[str, str] = {}
    for op in program.ops:
        for v in op.outputs:
            made_at[v], made_by[v] = owner_device[op.name], op.name
    readers: dict[str, set[str]] = {v: set() for v in made_at}
    for op in program.ops:
        for v in op.inputs:
            if v not in made_at:
                raise PlanError(f"op {op.name!r} reads {v!r}, which no op produces and is no graph input")
            readers[v].add(owner_device[op.name])
    sends: dict[str, dict[str, tuple[str, ...]]] = {}
    for v, source in made_at.items():
        targets = set(readers[v])
        if v in program.outputs:
            targets.add(origin)
        targets.discard(source)
        if targets:
            sends.setdefault(source, {})[v] = tuple(sorted(targets))
    stages = _stages(plan, program, made_by)
    single = {s.node_ids[0]: s for s in stages if len(s.node_ids) == 1}
    pools = tile_pools(plan, made_at, {n: s.needs for n, s in single.items()},
                       {n: s.keep for n, s in single.items()})
    pooled: dict[str, dict[str, RunStage]] = {}  # device -> crop value -> its pooled tile's stage there
    gathered: dict[str, dict[str, frozenset[str]]] = {}  # gather device -> tile output -> the pool's devices
    for pool in pools:
        for tile in pool.tiles:  # no fixed route for a pooled tile's crop and output: the dispatcher picks
            sends.get(pool.scatter, {}).pop(tile.crop, None)
            sends.get(tile.planned, {}).pop(tile.output, None)
            gathered.setdefault(pool.gather, {})[tile.output] = frozenset(pool.devices)
            for d in pool.devices:
                pooled.setdefault(d, {})[tile.crop] = replace(single[tile.node_id], device=d)
    moved = {t.node_id for p in pools for t in p.tiles}
    stages = [s for s in stages if not (len(s.node_ids) == 1 and s.node_ids[0] in moved)]
    devices = dict.fromkeys([origin, *plan.devices_used])
    return {
        d: DeviceRoute(
            device=d,
            stages=tuple(s for s in stages if s.device == d),
            expects=frozenset(v for src in sends for v, ts in sends[src].items() if d in ts)
            | (frozenset(program.graph_inputs) if d == origin else frozenset()) | frozenset(gathered.get(d, {})),
            sends=sends.get(d, {}),
            results=program.outputs if d == origin else (),
            senders={**{v: frozenset([src]) for src in sends for v, ts in sends[src].items() if d in ts},
                     **({v: frozenset([CLIENT]) for v in program.graph_inputs} if d == origin else {}),
                     **gathered.get(d, {})},
            pool_stages=pooled.get(d, {}),
            pools=pools_by_role(pools, d),
        )
        for d in devices
    }


def _stages(plan: Plan, program: ProgramIndex, made_by: Mapping[str, str]) -> list[RunStage]:
    stage_of_node = {n: i for i, s in enumerate(plan.stages) for n in s.node_ids}
    ops_by_stage: dict[int, list[str]] = {}
    stage_of_op: dict[str, int] = {}
    for op in program.ops:
        i = stage_of_node[op.owner]
        ops_by_stage.setdefault(i, []).append(op.name)
        stage_of_op[op.name] = i
    by_name = {op.name: op for op in program.ops}
    used_outside: set[str] = set(program.outputs)
    for op in program.ops:
        for v in op.inputs:
            if v in made_by and stage_of_op[made_by[v]] != stage_of_op[op.name]:
                used_outside.add(v)
    out = []
    for i, stage in enumerate(plan.stages):
        names = ops_by_stage.get(i, [])
        inside = {v for n in names for v in by_name[n].outputs}
        needs = frozenset(v for n in names for v in by_name[n].inputs if v not in inside)
        keep = tuple(v for n in names for v in by_name[n].outputs if v in used_outside)
        out.append(RunStage(i, str(stage), stage.device, stage.node_ids, tuple(names), needs, keep))
    return out
