"""The reliability of `ilp`'s plans as a linear form: a sum over failure states.

coinfer.cost.reliability is the model: device d is down with probability phi_d and directed link
l with psi_l, independently; a request succeeds when every node has a replica (its device, else
one of its standbys) up and every link the placement so chosen uses is up. A product over the
devices and links a plan uses is not linear in the placement, but a sum over states is: for each
state sigma (which of the devices and links that can fail are down), with probability P(sigma),

    R = sum_sigma P(sigma) w[sigma],   w[sigma] in [0, 1],
    w[sigma] <= sum_{d up in sigma} (x[v,d] + s[v,d])   for every node v   (a replica is up)
    w[sigma] <= 1 - h                                   for every hop h over a link down in sigma

Every w is pushed up (by the objective's weight on unreliability, or by the floor R >= min
reliability), so at an integral placement w[sigma] is 1 exactly when the request succeeds in
sigma, and R is the reliability `evaluate` computes. Devices and links that always fail (p = 1)
are down in every state; those that never fail are up in every state and add none.

Which failures the states cover, so that R stays exact:
- where every ordered device pair has a link that never fails (`standbys_exact`), the states cover
  devices only: any failover placement's links are up, so "a replica of every node is up" is all
  a state asks, up to three standbys per node;
- otherwise the states cover devices and links, and a state must also see that no value crosses a
  link it takes down (or a missing one) in the placement it fails over to. Where node v runs in
  a state is then c[v,d] = x[v,d] for a device d that is up, plus q[v,d] = s[v,d] AND (v's primary
  is down), three rows that make q exact at integral points; a flow u -> r over a down pair (p, q)
  gives w + c[u,p] + c[r,q] <= 2. With one standby per node, "the first replica that is up" is
  the primary, else the standby, so this is the runtime's failover rule exactly; the ILP allows
  one standby per node here (the greedy pass, after, may add more).
Above MAX_FAILURE_STATES states the ILP leaves reliability to the standby pass (coinfer.solve.replicas).

Size: one continuous variable per state, and per state up to N node rows plus a row per hop over
a link it takes down; with links, also up to N x D failover variables (three rows each) and a row
per flow and down pair.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

from coinfer.problem import Problem
from coinfer.solve.ilp_model import MilpModel

MAX_FAILURE_STATES = 256


def standbys_exact(problem: Problem) -> bool:
    """Failover can never meet a missing or failing link: every ordered device pair has a link
    that never fails."""
    cluster = problem.cluster
    names = cluster.device_names
    return all((link := cluster.link(a, b)) is not None and link.failure_probability == 0.0
               for a in names for b in names if a != b)


def state_count(problem: Problem, *, with_links: bool) -> int:
    """How many failure states the reliability form would sum over."""
    fallible = [d for d in problem.cluster.devices if 0.0 < d.failure_probability < 1.0]
    links = [lk for lk in problem.cluster.links if 0.0 < lk.failure_probability < 1.0] if with_links else []
    return 1 << (len(fallible) + len(links))


def reliability_form(model: MilpModel, *, with_links: bool) -> dict[int, float]:
    """The columns and coefficients of R (see the module docstring); adds the state variables and
    their rows to `model`."""
    problem, devices = model.problem, model.devices
    k = len(devices)
    phi = [problem.cluster.device(name).failure_probability for name in devices]
    fallible = [d for d, p in enumerate(phi) if 0.0 < p < 1.0]
    always_down = {d for d, p in enumerate(phi) if p >= 1.0}
    hops_on: dict[tuple[int, int], list[int]] = defaultdict(list)
    for hop in model.hops:
        hops_on[hop.source, hop.target].append(hop.var)
    failing_over = with_links and bool(model.standby)
    # the links a state can take down: every ordered pair when failover may use any of them
    pairs = [(p, q) for p in range(k) for q in range(k) if p != q] if failing_over else list(hops_on)
    psi = {pair: _link_failure(problem, devices, pair) for pair in pairs} if with_links else {}
    fallible_links = [pair for pair, p in psi.items() if 0.0 < p < 1.0]
    dead_links = {pair for pair, p in psi.items() if p >= 1.0}

    replicas = _replicas(model)
    flows = _flows(model) if failing_over else []
    form: dict[int, float] = {}
    for downs in itertools.product((False, True), repeat=len(fallible) + len(fallible_links)):
        device_downs, link_downs = downs[:len(fallible)], downs[len(fallible):]
        down_devices = always_down | {d for d, down in zip(fallible, device_downs, strict=True) if down}
        down_links = dead_links | {pair for pair, down in zip(fallible_links, link_downs, strict=True) if down}
        p_state = math.prod(phi[d] if down else 1.0 - phi[d] for d, down in zip(fallible, device_downs, strict=True))
        p_state *= math.prod(psi[pair] if down else 1.0 - psi[pair]
                             for pair, down in zip(fallible_links, link_downs, strict=True))
        if p_state <= 0.0:
            continue
        w = model.var()
        form[w] = p_state
        if failing_over:
            _failover_rows(model, w, down_devices, down_links, flows)
            continue
        for v_replicas in replicas:
            if any(d in down_devices for _, d in v_replicas):
                up = {col: -1.0 for col, d in v_replicas if d not in down_devices}
                model.row({w: 1.0, **up}, -math.inf, 0.0)
        for pair in down_links:
            for col in hops_on[pair]:
                model.row({w: 1.0, col: 1.0}, -math.inf, 1.0)
    return form


ORIGIN_END = -1  # a flow's end at the origin: the graph's inputs start there, its results return there


def _flows(model: MilpModel) -> list[tuple[int, int]]:
    """(producer, reader) node indices of every value a request moves; ORIGIN_END for the origin's end."""
    graph = model.problem.graph
    flows: set[tuple[int, int]] = set()
    for gi in graph.inputs:
        flows |= {(ORIGIN_END, graph.index[c]) for c in graph.consumers[gi.name]}
    for u, node in enumerate(graph.nodes):
        flows |= {(u, graph.index[c]) for c in graph.consumers[node.id]}
    flows |= {(graph.index[out], ORIGIN_END) for out in graph.outputs}
    return sorted(flows)


def _failover_rows(model: MilpModel, w: int, down_devices: set[int], down_links: set[tuple[int, int]],
                   flows: list[tuple[int, int]]) -> None:
    """The rows of one state when standbys may take over and links may be down (one standby per node):
    where node v runs in this state is c[v,d] = x[v,d] on a device that is up, plus q[v,d] = s[v,d]
    AND (v's primary is down), linearised exactly (three rows); w is 0 unless every node runs
    somewhere and no value crosses a pair of devices whose link is down or missing."""
    k, n = len(model.devices), len(model.problem.graph.nodes)
    origin = model.devices.index(model.problem.origin)
    runs_on: list[dict[int, dict[int, float]]] = []  # node -> device -> the linear form of c[v,d]
    for v in range(n):
        primary_down = {model.x(v, d): 1.0 for d in down_devices if model.allowed[v, d]}
        where: dict[int, dict[int, float]] = {d: {model.x(v, d): 1.0} for d in range(k)
                                              if model.allowed[v, d] and d not in down_devices}
        if primary_down:
            for d in range(k):
                s = model.standby.get((v, d))
                if s is None or d in down_devices:
                    continue
                q = model.var()
                model.row({q: 1.0, s: -1.0}, -math.inf, 0.0)
                model.row({q: 1.0, **{x: -1.0 for x in primary_down}}, -math.inf, 0.0)
                model.row({q: 1.0, s: -1.0, **{x: -1.0 for x in primary_down}}, -1.0, math.inf)
                where.setdefault(d, {})[q] = 1.0
            model.row({w: 1.0, **{col: -c for form in where.values() for col, c in form.items()}}, -math.inf, 0.0)
        runs_on.append(where)
    at_origin: dict[int, dict[int, float]] = {origin: {}}  # the origin's end: on the origin, always
    for a, b in flows:
        sources = at_origin if a == ORIGIN_END else runs_on[a]
        targets = at_origin if b == ORIGIN_END else runs_on[b]
        for p, from_p in sources.items():
            for q, to_q in targets.items():
                if p != q and (p, q) in down_links:
                    both = {**from_p}
                    for col, c in to_q.items():
                        both[col] = both.get(col, 0.0) + c
                    model.row({w: 1.0, **both}, -math.inf, float(len([f for f in (from_p, to_q) if f])))


def _replicas(model: MilpModel) -> list[list[tuple[int, int]]]:
    """Per node, the (column, device) of every x[v,d] that may be 1 and every s[v,d]."""
    k = len(model.devices)
    out = [[(model.x(v, d), d) for d in range(k) if model.allowed[v, d]] for v in range(len(model.problem.graph.nodes))]
    for (v, d), col in model.standby.items():
        out[v].append((col, d))
    return out


def _link_failure(problem: Problem, devices: list[str], pair: tuple[int, int]) -> float:
    link = problem.cluster.link(devices[pair[0]], devices[pair[1]])
    return 1.0 if link is None else link.failure_probability
