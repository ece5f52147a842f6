"""Serving requests through compiled plans on the simulated cluster, one process per request.

Two orders of execution within a request (`Execution`):
- "serial" (the default) is the cost model's: every stage and hop of a request one after another
  (`Program.serial_steps`; a tiled stage is one step, its tiles in parallel within it), so with one
  request in flight the simulated latency is `cost.evaluate(plan, problem).latency_s` (for a tiled
  stage, up to the order in which its messages queue on a link). Requests still overlap each other: with many in
  flight a plan pipelines, and its throughput tends to 1 / `bottleneck_s`.
- "dataflow" is the runtime's (coinfer.runtime.routing): a stage starts when every value it reads
  has arrived on its device and the request's previous stage there has ended; a value leaves as
  soon as its stage ends, to all its readers at once. Branches on different devices then overlap,
  which the cost model does not credit: latency equals it on chains and is at most it on DAGs.

Background load (`Background`): the cost model charges each device with a `BackgroundLoad` its
M/M/1 (or M/D/1) mean time in system once per request. "none" (the default) simulates devices
that serve only these requests: the background is left out, and speed traces
(`conditions.SpeedTrace`) model load that comes and goes instead. "mean-delay" adds the cost
model's term as a fixed delay before a request's first stage on each loaded device, holding no
resource, so that latency still equals `evaluate`'s on a loaded cluster.

Plans are numbered by version: `Server.use(plan)` makes a new version; a request runs on the
version current when it started, to the end (an epoch change never moves a request mid-flight).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from coinfer.adapt.energy import request_energy_by_device_j
from coinfer.adapt.records import HopSample, RequestRecord, StageSample
from coinfer.cost import terms
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.sim.network import Process, SimCluster
from coinfer.sim.program import INPUT_STAGE, Program, SimHop, SimStage, compile_plan

Execution = Literal["serial", "dataflow"]
Background = Literal["none", "mean-delay"]


@dataclass
class _Trail:
    """What one request has done so far (mutable: its own processes fill it)."""

    stages: dict[int, StageSample] = field(default_factory=dict)
    hops: dict[int, HopSample] = field(default_factory=dict)
    queue_lengths: dict[str, int] = field(default_factory=dict)
    charged: set[str] = field(default_factory=set)


class Server:
    """Runs requests of the current plan version on `world` (see the module docstring)."""

    def __init__(self, world: SimCluster, problem: Problem, *, execution: Execution = "serial",
                 background: Background = "none") -> None:
        self.world, self.env, self.problem = world, world.env, problem
        self.execution, self.background = execution, background
        self.programs: list[Program] = []

    @property
    def version(self) -> int:
        """The version new requests start on (the last plan `use`d)."""
        return len(self.programs) - 1

    @property
    def plan(self) -> Plan:
        return self.programs[-1].plan

    def use(self, plan: Plan) -> int:
        """Serve new requests with `plan` from now on; returns its version."""
        self.programs.append(compile_plan(plan, self.problem))
        return self.version

    def request(self, request_id: int) -> Process:
        """One request from its arrival at the origin to its results there; returns its record."""
        version, sent_s = self.version, self.env.now
        program = self.programs[version]
        trail = _Trail()
        if self.execution == "serial":
            yield from self._serial(program, trail)
        else:
            yield from self._dataflow(program, trail)
        stages = tuple(trail.stages[i] for i in sorted(trail.stages))
        hops = tuple(trail.hops[i] for i in sorted(trail.hops))
        latency_s = self.env.now - sent_s
        return RequestRecord(request_id, version, sent_s, latency_s, stages, hops,
                             request_energy_by_device_j(self.problem.cluster, stages, hops, latency_s),
                             dict(trail.queue_lengths))

    def _serial(self, program: Program, trail: _Trail) -> Process:
        for step in program.serial_steps:
            if step.kind == "stage":
                yield from self._stage(program.stages[step.index], trail)
            elif step.kind == "hop":
                yield from self._hop(program.hops[step.index], trail)
            else:  # a tiled stage: its tiles in parallel, as the runtime runs them
                section = program.sections[step.index]
                yield from self._dataflow(program, trail, section.stages, section.hops)

    def _dataflow(self, program: Program, trail: _Trail, only_stages: frozenset[int] | None = None,
                  only_hops: frozenset[int] | None = None) -> Process:
        """The request's stages and hops in dataflow order; with `only_*`, just those (what they wait
        for outside them is done: a serial run reached them in order)."""
        env = self.env
        stage_done = [env.event() for _ in program.stages]
        hop_done = [env.event() for _ in program.hops]
        chosen_stages = [s for s in program.stages if only_stages is None or s.index in only_stages]
        chosen_hops = [h for h in program.hops if only_hops is None or h.index in only_hops]
        if only_stages is not None:
            for event in (*(stage_done[i] for i in range(len(stage_done)) if i not in only_stages),
                          *(hop_done[i] for i in range(len(hop_done)) if only_hops is None or i not in only_hops)):
                event.succeed()

        def run_stage(stage: SimStage) -> Process:
            before = [hop_done[h] for h in program.needs[stage.index]]
            if (previous := program.previous_on_device[stage.index]) != INPUT_STAGE:
                before.append(stage_done[previous])
            yield env.all_of(before)
            yield from self._stage(stage, trail)
            stage_done[stage.index].succeed()

        def run_hop(hop: SimHop) -> Process:
            if hop.after != INPUT_STAGE:
                yield stage_done[hop.after]
            yield from self._hop(hop, trail)
            hop_done[hop.index].succeed()

        # Hops are started in list order, so hops leaving at the same moment over one link queue
        # in the order the cost model lists them.
        for hop in chosen_hops:
            env.process(run_hop(hop))
        for stage in chosen_stages:
            env.process(run_stage(stage))
        results = program.result_hops if only_stages is None else ()
        yield env.all_of([*(stage_done[s.index] for s in chosen_stages), *(hop_done[h] for h in results)])

    def _stage(self, stage: SimStage, trail: _Trail) -> Process:
        device = self.problem.cluster.device(stage.device)
        if self.background == "mean-delay" and stage.device not in trail.charged:
            trail.charged.add(stage.device)
            delay_s = terms.queueing_time_s(device.background)
            if delay_s > 0:
                yield self.env.timeout(delay_s)
        done = yield from self.world.compute(stage.device, stage.work_s)
        trail.stages[stage.index] = StageSample(stage.device, stage.node_ids, done.end_s - done.start_s,
                                                stage.work_s, done.end_s)
        trail.queue_lengths[stage.device] = max(trail.queue_lengths.get(stage.device, 0), done.waiting)

    def _hop(self, hop: SimHop, trail: _Trail) -> Process:
        t = hop.transfer
        trail.hops[hop.index] = yield from self.world.send(t.source, t.target, t.wire_bytes, t.codec_s)
