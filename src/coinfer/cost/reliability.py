"""The reliability of a plan: the probability that a request finds the devices and links it needs up.

Model (REFERENCE section 11: the survey's product, extended with replicas). Device d fails with
probability phi_d and directed link l with psi_l, independently. A stage runs on the first of its
replicas (its primary, then its standbys in order) that is up, which is the runtime's failover
rule (`Plan.failover`); a request succeeds when every stage has a replica up and every directed
link that the placement so chosen sends over is up (the result's return to the origin included).
A stage on the origin has no failover, whatever standbys it names: requests enter at the origin,
and the runtime cannot replace it (coinfer.runtime.recovery).

- Without standbys this is the survey's product over the devices that compute and the links that
  carry data: R = prod_d (1 - phi_d) * prod_l (1 - psi_l) (`plain_reliability`).
- With standbys, R = sum over the up/down states of the devices the plan names that can fail
  (0 < phi < 1) of P(state) * [every stage has a replica up] * prod_l (1 - psi_l) over the links
  the state's placement uses (`replicated_reliability`). It is exact, and takes 2^n states for
  n such devices; above MAX_ENUMERATED_DEVICES it is the product over replica groups of
  (1 - prod_r phi_r), REFERENCE 11's stage formula, which is exact when the groups share no device
  and otherwise a lower bound (the events "group g has a replica up" all grow with the devices'
  states, so by Harris's inequality their joint probability is at least their product), and the
  links of the primary placement.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

from coinfer.plan import Plan, Stage
from coinfer.problem import Problem

MAX_ENUMERATED_DEVICES = 16


def reliability(plan: Plan, problem: Problem, tiled_links: Sequence[tuple[str, str]] = ()) -> float:
    """The probability that a request of `plan` succeeds (see the module docstring). A tiled stage
    needs every one of its tile devices and `tiled_links` (the links its messages use) up."""
    stages = plan.stages
    flows = stage_flows(plan, problem)
    if plan.tilings:
        tiled = {i for i, s in enumerate(stages) if s.tiling}
        flows = frozenset((a, b) for a, b in flows if b not in tiled)  # the scatter is in tiled_links
        tile_devices = {d for s in stages for d in s.compute_devices}
        r = math.prod([1.0 - problem.cluster.device(d).failure_probability for d in tile_devices - {
            s.device for s in stages}])
        links = set(tiled_links) - links_used([s.device for s in stages], flows, problem.origin)
        for a, b in links:  # a tiled stage's links exist: tiled_stage_cost refused it otherwise
            link = problem.cluster.link(a, b)
            r *= 1.0 - (link.failure_probability if link is not None else 1.0)
        stages = tuple(Stage(s.device, s.node_ids, s.standbys) for s in stages)
        if not plan.has_standbys:
            return r * plain_reliability([s.device for s in stages], flows, problem)
        return r * replicated_reliability(stages, flows, problem)
    if not plan.has_standbys:
        return plain_reliability([s.device for s in stages], flows, problem)
    return replicated_reliability(stages, flows, problem)


def stage_flows(plan: Plan, problem: Problem) -> frozenset[tuple[int, int]]:
    """Which stage sends to which, by index; -1 is the origin (graph inputs start there, results
    return there). A request's links are the device pairs of these flows."""
    graph = problem.graph
    stage_of = {n: i for i, s in enumerate(plan.stages) for n in s.node_ids}
    stage_of.update({i.name: -1 for i in graph.inputs})
    flows = {(stage_of[value], stage_of[c]) for value in stage_of for c in graph.consumers[value]}
    flows |= {(stage_of[out], -1) for out in graph.outputs}
    return frozenset((a, b) for a, b in flows if a != b)


def links_used(devices: Sequence[str], flows: Iterable[tuple[int, int]], origin: str) -> set[tuple[str, str]]:
    """The directed device pairs a request crosses when stage i runs on devices[i]."""
    where = [*devices, origin]  # index -1 is the origin
    return {(where[a], where[b]) for a, b in flows if where[a] != where[b]}


def plain_reliability(devices: Sequence[str], flows: Iterable[tuple[int, int]], problem: Problem) -> float:
    """The survey's product: every device that computes and every link that carries data must not fail."""
    r = math.prod(1.0 - problem.cluster.device(d).failure_probability for d in set(devices))
    return r * _links_ok(devices, flows, problem)


def replicated_reliability(stages: Sequence[Stage], flows: Iterable[tuple[int, int]], problem: Problem) -> float:
    cluster = problem.cluster
    stages = [Stage(s.device, s.node_ids) if s.device == problem.origin else s for s in stages]
    phi = {d: cluster.device(d).failure_probability for s in stages for d in s.replicas}
    fallible = sorted(d for d, p in phi.items() if 0.0 < p < 1.0)
    never_up = {d for d, p in phi.items() if p >= 1.0}
    flows = tuple(flows)
    if len(fallible) > MAX_ENUMERATED_DEVICES:
        return _group_bound(stages, flows, problem, phi)
    link_ok: dict[tuple[str, ...], float] = {}  # the links' product, per placement of the stages
    total = 0.0
    for downs in itertools.product((False, True), repeat=len(fallible)):
        down = never_up | {d for d, is_down in zip(fallible, downs, strict=True) if is_down}
        chosen = _first_up(stages, down)
        if chosen is None:
            continue
        if chosen not in link_ok:
            link_ok[chosen] = _links_ok(chosen, flows, problem)
        p_state = math.prod(phi[d] if is_down else 1.0 - phi[d] for d, is_down in zip(fallible, downs, strict=True))
        total += p_state * link_ok[chosen]
    return total


def _first_up(stages: Sequence[Stage], down: set[str]) -> tuple[str, ...] | None:
    chosen = []
    for stage in stages:
        device = next((d for d in stage.replicas if d not in down), None)
        if device is None:
            return None
        chosen.append(device)
    return tuple(chosen)


def _links_ok(devices: Sequence[str], flows: Iterable[tuple[int, int]], problem: Problem) -> float:
    """The probability that every link used when stage i runs on devices[i] is up (no link: 0)."""
    r = 1.0
    for source, target in links_used(devices, flows, problem.origin):
        link = problem.cluster.link(source, target)
        r *= 1.0 - (link.failure_probability if link is not None else 1.0)
    return r


def _group_bound(stages: Sequence[Stage], flows: Sequence[tuple[int, int]], problem: Problem,
                 phi: Mapping[str, float]) -> float:
    groups = {s.replicas for s in stages}
    r = math.prod(1.0 - math.prod(phi[d] for d in g) for g in groups)
    return r * _links_ok([s.device for s in stages], flows, problem)
