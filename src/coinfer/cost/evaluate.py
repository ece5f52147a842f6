"""`evaluate(plan, problem)`: the one function that turns a placement into its costs.

Model (REFERENCE section 1, the survey's unified model; choices where it is silent are ours):
- A request runs its stages one after another (L = L_c + L_t + L_que), as the survey and DADS
  count it; concurrency between branches placed on different devices is not credited, except
  within a declared parallel group (a tensor-parallel layer's shards): a group spread over devices
  takes the time of its slowest device (coinfer.cost.parallel_groups), its compute counting as
  compute and the rest of that time as transfer.
- A value (a node's output, or the model input at the origin) is sent once to every other device
  that reads it, however many nodes there read it (DADS); each send is one message over the
  direct link, and the model's outputs return to the origin.
- Queueing: each loaded device a request computes on adds its time in system once.
- Codecs (ours): a hop over a link with a codec (`plan.codecs`) sends `wire_bytes` of each of the
  value's tensors (`coinfer.codec_model`) and adds the codec's encode + decode time to the hop;
  the link stays busy for the whole hop (a link's sender encodes, sends, and the receiver decodes).
- Energy: each device's busy power times its compute time, plus the sender's transmit power times
  each transfer's time on the wire (codec time excluded: it is CPU work, not radio time), plus the
  origin's idle power for the rest of the request, while it waits (`terms.waiting_energy_j`). Money:
  per-second device and link prices (link time on the wire), per-byte link prices (bytes on the
  wire), and electricity priced per kWh.
- Reliability: every device that computes, and every directed link that carries data (the
  result's return included), must not fail: the product of their (1 - p); with standbys, a stage
  fails only when all its replicas do (coinfer.cost.reliability, exact).
- Memory of a device: parameters of its nodes plus the largest working set (inputs + output) of
  one of its nodes; a standby holds the parameters of the nodes it stands by for, and needs their
  working set when it takes over. Standbys compute nothing and add no latency, energy or money.
- Throughput: the bottleneck is the busiest device (its busy time stretched by background load) or
  directed link per request.
- Tiled stages (`plan.tilings`, priced by coinfer.cost.tiled_stage): a tiled stage adds its own
  latency (input ready on the scatter device -> last output tile stitched on the gather device;
  the busiest tile device's compute counts as compute, the rest as transfer), each device's tile
  compute to its busy time, each crop, output tile and halo to its link's busy time, money and
  the sender's transmit energy, and the range's weights plus the largest tile working set to each
  tile device's memory. Its nodes' own times on the gather device count for nothing, and the
  scatter replaces the hop of the range's input. Every tile device and every link the stage uses
  must be up (the failover of tiles to the other tile devices is not credited: a lower bound).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace

from coinfer.codec_model import NO_CODEC, codec_time_s, effective_codec, wire_bytes
from coinfer.cost import terms
from coinfer.cost.breakdown import Breakdown, StageCost, Transfer, Violation
from coinfer.cost.constraints import violations
from coinfer.cost.parallel_groups import group_spans
from coinfer.cost.reliability import reliability as plan_reliability
from coinfer.cost.tiled_plan import tiled_stage_costs
from coinfer.cost.tiled_stage import TiledStageCost
from coinfer.plan import Plan
from coinfer.problem import Problem


def evaluate(plan: Plan, problem: Problem) -> Breakdown:
    """All metrics of `plan` for `problem`; see the module docstring for the model."""
    graph, cluster = problem.graph, problem.cluster
    transfers = list_transfers(plan, problem)
    tiled = tiled_stage_costs(plan, problem) if plan.tilings else ()
    tiled_nodes = plan.tiled_node_ids
    busy_s: dict[str, float] = defaultdict(float)
    for node in graph.nodes:
        if node.id not in tiled_nodes:
            device = plan.placement[node.id]
            busy_s[device] += problem.node_time_s[device][node.id]
    for stage_cost in tiled:
        for device, share in stage_cost.devices.items():
            if share.tiles:
                busy_s[device] += share.compute_s
    queueing_s = {d: terms.queueing_time_s(cluster.device(d).background) for d in busy_s}

    energy: dict[str, float] = {d.name: terms.compute_energy_j(d, busy_s.get(d.name, 0.0)) for d in cluster.devices}
    link_busy_s: dict[tuple[str, str], float] = defaultdict(float)
    cost_usd = 0.0
    for t in transfers:
        link = cluster.link(t.source, t.target)
        energy[t.source] += terms.transmit_energy_j(link, t.wire_time_s)
        link_busy_s[(t.source, t.target)] += t.time_s
        cost_usd += terms.link_cost_usd(link, t.wire_time_s, t.wire_bytes)
    for stage_cost in tiled:
        for (source, target), use in stage_cost.link_use.items():
            link = cluster.link(source, target)
            energy[source] += terms.transmit_energy_j(link, use.transfer_s)
            link_busy_s[(source, target)] += use.transfer_s
            cost_usd += terms.link_cost_usd(link, use.transfer_s, use.size_bytes)
    tiled_compute_s = sum(c.critical_compute_s for c in tiled)
    compute_s = sum(busy_s.values()) - sum(c.devices[d].compute_s for c in tiled for d in c.devices) + tiled_compute_s
    transfer_s = sum(t.time_s for t in transfers) + sum(c.latency_s for c in tiled) - tiled_compute_s
    spans = group_spans(plan, problem, transfers)
    compute_credit_s = sum(g.compute_s - g.critical_compute_s for g in spans)
    compute_s -= compute_credit_s
    transfer_s -= sum(g.credit_s for g in spans) - compute_credit_s
    queue_s = sum(queueing_s.values())
    latency_s = compute_s + transfer_s + queue_s
    energy[problem.origin] += float(terms.waiting_energy_j(cluster.origin, latency_s, busy_s.get(problem.origin, 0.0)))
    for d in cluster.devices:
        cost_usd += terms.device_cost_usd(d, busy_s.get(d.name, 0.0), energy[d.name])

    reliability = plan_reliability(plan, problem, tuple(pair for c in tiled for pair in c.link_use))

    resources = {f"device {d}": terms.effective_busy_s(cluster.device(d), s) for d, s in busy_s.items()}
    resources.update({f"link {s}->{t}": v for (s, t), v in link_busy_s.items()})
    bottleneck = max(resources, key=lambda k: resources[k])
    bottleneck_s = resources[bottleneck]

    partial = Breakdown(
        latency_s=latency_s, compute_s=compute_s, transfer_s=transfer_s, queueing_s=queue_s,
        energy_j=sum(energy.values()), origin_energy_j=energy[problem.origin], energy_by_device_j=dict(energy),
        cost_usd=cost_usd, reliability=reliability, bottleneck_s=bottleneck_s, bottleneck=bottleneck,
        throughput_rps=1.0 / bottleneck_s if bottleneck_s > 0 else math.inf,
        memory_by_device_bytes=memory_need_bytes(plan, problem, tiled),
        stages=_stage_costs(plan, problem, transfers, queueing_s, tiled), transfers=tuple(transfers),
        violations=(), objective_value=0.0, tiled_stages=tiled, parallel_groups=spans,
    )
    found: tuple[Violation, ...] = violations(partial, problem, resources)
    objective = sum(w * partial.metric(m) for m, w in problem.objective.weights.items() if w)
    return replace(partial, violations=found, objective_value=objective)


def list_transfers(plan: Plan, problem: Problem) -> list[Transfer]:
    """Every hop a request makes: each value to each other device that reads it, then the result."""
    graph, origin = problem.graph, problem.origin
    where = dict(plan.placement)
    where.update({i.name: origin for i in graph.inputs})
    # a tiled stage's nodes read through its scatter (coinfer.cost.tiled_stage), not over a hop
    tiled = plan.tiled_node_ids
    hops: list[Transfer] = []
    for value in [*(i.name for i in graph.inputs), *(n.id for n in graph.nodes)]:
        readers = dict.fromkeys(where[c] for c in graph.consumers[value] if c not in tiled)
        for target in readers:
            if target != where[value]:
                hops.append(_hop(plan, problem, value, where[value], target, is_result=False))
    for out in graph.outputs:
        if where[out] != origin:
            hops.append(_hop(plan, problem, out, where[out], origin, is_result=True))
    return hops


def memory_need_bytes(plan: Plan, problem: Problem,
                      tiled: tuple[TiledStageCost, ...] | None = None) -> dict[str, int]:
    """Parameters plus the largest working set per device; a tiled stage's devices hold the range's
    weights and their largest tile working set (`tiled`: the plan's tiled stage costs, priced here
    when not given), its scatter and gather devices the whole input and output maps."""
    graph = problem.graph
    if tiled is None:
        tiled = tiled_stage_costs(plan, problem) if plan.tilings else ()
    tiled_nodes = plan.tiled_node_ids
    params: dict[str, int] = defaultdict(int)
    working: dict[str, int] = defaultdict(int)
    for node in graph.nodes:
        if node.id in tiled_nodes:
            continue
        for device in (plan.placement[node.id], *plan.standbys.get(node.id, ())):
            params[device] += node.param_bytes
            working[device] = max(working[device], terms.working_set_bytes(graph, node))
    for stage_cost in tiled:
        for device, share in stage_cost.devices.items():
            params[device] += share.weights_bytes
            working[device] = max(working[device], share.working_set_bytes, share.held_map_bytes)
    return {d: params[d] + working[d] for d in params}


def _hop(plan: Plan, problem: Problem, value: str, source: str, target: str, *, is_result: bool) -> Transfer:
    size = problem.graph.tensor_bytes(value)
    link = problem.cluster.link(source, target)
    codec = plan.codec(source, target)
    if codec == NO_CODEC:
        return Transfer(value, source, target, size, size, terms.transfer_time_s(link, size), is_result)
    specs = problem.graph.value_specs(value)
    wire = sum(wire_bytes(codec, spec) for spec in specs)
    codec_s = sum(codec_time_s(effective_codec(codec, spec.dtype), spec.size_bytes) for spec in specs)
    time_s = terms.transfer_time_s(link, wire, codec_s)
    return Transfer(value, source, target, size, wire, time_s, is_result, codec_s)


def _stage_costs(plan: Plan, problem: Problem, transfers: list[Transfer], queueing_s: dict[str, float],
                 tiled: tuple[TiledStageCost, ...]) -> tuple[StageCost, ...]:
    graph = problem.graph
    out: list[StageCost] = []
    charged: set[str] = set()
    tiled_by_first = {t.first: c for t, c in zip(plan.tilings, tiled, strict=True)}
    for stage in plan.stages:
        members = set(stage.node_ids)
        sent = [t for t in transfers if t.tensor in members]
        priced = tiled_by_first.get(stage.node_ids[0]) if stage.tiling else None
        if priced is not None:
            out.append(StageCost(
                device=stage.device, first=stage.node_ids[0], last=stage.node_ids[-1],
                node_count=len(stage.node_ids),
                flops=priced.redundancy * sum(graph.node(n).flops for n in stage.node_ids),
                compute_s=priced.critical_compute_s, queueing_s=0.0,
                sent_bytes=sum(t.size_bytes for t in sent), transfer_s=sum(t.time_s for t in sent),
            ))
            continue
        queue = 0.0 if stage.device in charged else queueing_s[stage.device]
        charged.add(stage.device)
        out.append(StageCost(
            device=stage.device, first=stage.node_ids[0], last=stage.node_ids[-1],
            node_count=len(stage.node_ids), flops=sum(graph.node(n).flops for n in stage.node_ids),
            compute_s=sum(problem.node_time_s[stage.device][n] for n in stage.node_ids),
            queueing_s=queue, sent_bytes=sum(t.size_bytes for t in sent), transfer_s=sum(t.time_s for t in sent),
        ))
    return tuple(out)


