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
- with standbys (`standbys_exact`): the failover placement of a state is not a function of the
  primary placement's hop variables, so the states cover devices only, and standbys are chosen
  only when every ordered device pair has a link that never fails: then any failover placement's
  links are up, and R is exact;
- otherwise the states cover devices and links, over the primary placement (no standbys).
Above MAX_FAILURE_STATES states the ILP leaves the term to the standby pass (coinfer.solve.replicas).

Size: one continuous variable per state, and per state up to N node rows plus a row per hop
over a link it takes down.
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
    phi = [problem.cluster.device(name).failure_probability for name in devices]
    fallible = [d for d, p in enumerate(phi) if 0.0 < p < 1.0]
    always_down = {d for d, p in enumerate(phi) if p >= 1.0}
    hops_on: dict[tuple[int, int], list[int]] = defaultdict(list)
    for hop in model.hops:
        hops_on[hop.source, hop.target].append(hop.var)
    psi = {pair: _link_failure(problem, devices, pair) for pair in hops_on} if with_links else {}
    fallible_links = [pair for pair, p in psi.items() if 0.0 < p < 1.0]
    dead_links = {pair for pair, p in psi.items() if p >= 1.0}

    replicas = _replicas(model)
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
        for v_replicas in replicas:
            if any(d in down_devices for _, d in v_replicas):
                up = {col: -1.0 for col, d in v_replicas if d not in down_devices}
                model.row({w: 1.0, **up}, -math.inf, 0.0)
        for pair in down_links:
            for col in hops_on[pair]:
                model.row({w: 1.0, col: 1.0}, -math.inf, 1.0)
    return form


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
