"""`genetic`: a genetic-algorithm baseline for multi-device DAG placement.

The survey (REFERENCE section 1) lists genetic algorithms among the multi-cut strategies for
placing many nodes on many devices. An individual is a placement: one gene per node, in
topological order, holding a device index. Fitness is `cost.evaluate`'s objective, and
constraints are handled by Deb's feasibility rule (Deb, CMAME 2000), a penalty that needs no
tuning: a plan with a smaller total relative violation (memory, link, deadline, energy budget,
capacity) always ranks first, and the objective breaks ties among equally feasible plans.

Operators: tournament selection of `TOURNAMENT` individuals; uniform or one-point crossover over
the topological order (one-point keeps a prefix on one parent's devices, the natural shape of a
cut); mutation moves one node, or a contiguous run of up to a quarter of the nodes (a stage), to
another device; the `ELITE` best survive unchanged. The first generation holds every
single-device plan, so the result is never worse than the best of them. Runs are deterministic:
all randomness comes from `random.Random(SEED)`.

Speed: the whole population is costed at once by numpy (`PopulationCost`, the same equations as
`cost.evaluate`, checked against it in the tests). Complexity O(GENERATIONS x POPULATION x (N D +
E + V D^2)); a 70-node graph on 3 devices takes well under a second. No optimality guarantee.
"""

from __future__ import annotations

import math
import random

import numpy as np
from numpy.typing import NDArray

from coinfer.cost import evaluate, terms
from coinfer.plan import Plan
from coinfer.problem import Problem

POPULATION = 60          # individuals per generation
GENERATIONS = 600        # upper bound on generations
STALL_GENERATIONS = 150  # stop when the best has not improved for this many generations
TOURNAMENT = 3           # individuals drawn per tournament
ELITE = 2                # best individuals copied unchanged into the next generation
CROSSOVER_RATE = 0.9
MUTATION_RATE = 0.6      # probability that a child is mutated (a node or a run of nodes)
SEED = 0

Genes = list[int]
FloatArray = NDArray[np.float64]


def genetic(problem: Problem) -> Plan:
    """The best plan the genetic algorithm finds (see the module docstring)."""
    rng = random.Random(SEED)
    cost = PopulationCost(problem)
    n, k = len(problem.graph.nodes), len(cost.devices)
    population = [[d] * n for d in range(k)]
    population += [[rng.randrange(k) for _ in range(n)] for _ in range(POPULATION - k)]
    best, stall = _rank(population, cost)[0], 0
    for _ in range(GENERATIONS):
        ranked = _rank(population, cost)
        if ranked[0][:2] < best[:2]:
            best, stall = ranked[0], 0
        else:
            stall += 1
            if stall >= STALL_GENERATIONS:
                break
        population = [genes for *_, genes in ranked[:ELITE]]
        while len(population) < POPULATION:
            a, b = _tournament(ranked, rng), _tournament(ranked, rng)
            child = _crossover(a, b, rng) if rng.random() < CROSSOVER_RATE else list(a)
            if rng.random() < MUTATION_RATE:
                _mutate(child, k, rng)
            population.append(child)
    placement = {node.id: cost.devices[g] for node, g in zip(problem.graph.nodes, best[2], strict=True)}
    plan = Plan(problem.graph, placement, "genetic")
    return Plan(problem.graph, placement, "genetic", evaluate(plan, problem).objective_value)


def _rank(population: list[Genes], cost: PopulationCost) -> list[tuple[float, float, Genes]]:
    """(violation, objective, genes), best first; Python's sort is stable, so ties keep order."""
    violation, objective = cost.score(np.array(population, dtype=np.intp))
    return sorted(zip(violation.tolist(), objective.tolist(), population, strict=True), key=lambda t: t[:2])


def _tournament(ranked: list[tuple[float, float, Genes]], rng: random.Random) -> Genes:
    return ranked[min(rng.randrange(len(ranked)) for _ in range(TOURNAMENT))][2]


def _crossover(a: Genes, b: Genes, rng: random.Random) -> Genes:
    if rng.random() < 0.5:
        cut = rng.randrange(1, len(a)) if len(a) > 1 else 0
        return a[:cut] + b[cut:]
    return [x if rng.random() < 0.5 else y for x, y in zip(a, b, strict=True)]


def _mutate(genes: Genes, devices: int, rng: random.Random) -> None:
    start = rng.randrange(len(genes))
    length = 1 if rng.random() < 0.5 else rng.randint(1, max(1, len(genes) // 4))
    target = rng.randrange(devices)
    for i in range(start, min(len(genes), start + length)):
        genes[i] = target


class PopulationCost:
    """`cost.evaluate`'s objective and constraint violations for many placements at once.

    Values (node outputs, then graph inputs, which stay on the origin) are sent once to every
    other device reading them; outputs return to the origin. Arrays are (population, values or
    nodes, devices); per-value hop time, energy and money are precomputed for every device pair.
    """

    def __init__(self, problem: Problem) -> None:
        graph, cluster = problem.graph, problem.cluster
        self.problem, self.devices = problem, list(cluster.device_names)
        devs = [cluster.device(d) for d in self.devices]
        self.origin = self.devices.index(problem.origin)
        self.time = np.array([[problem.node_time_s[d][n.id] for d in self.devices] for n in graph.nodes])
        self.power = np.array([d.busy_power_w for d in devs])
        self.price = np.array([d.price_usd_per_s for d in devs])
        self.elec = np.array([d.electricity_usd_per_kwh for d in devs]) / terms.JOULES_PER_KWH
        self.queue = np.array([terms.queueing_time_s(d.background) for d in devs])
        self.stretch = np.array([terms.effective_busy_s(d, 1.0) for d in devs])
        self.memory = np.array([d.memory_bytes for d in devs], dtype=float)
        self.params = np.array([n.param_bytes for n in graph.nodes], dtype=float)
        self.working = np.array([n.output_bytes + sum(graph.tensor_bytes(s) for s in dict.fromkeys(n.inputs))
                                 for n in graph.nodes], dtype=float)
        values = [n.id for n in graph.nodes] + [i.name for i in graph.inputs]
        pos = {v: i for i, v in enumerate(values)}
        edges = [(pos[v], graph.index[c]) for v in values for c in graph.consumers[v]]
        self.edge_value = np.array([e[0] for e in edges], dtype=np.intp)
        self.edge_reader = np.array([e[1] for e in edges], dtype=np.intp)
        self.outputs = np.array([graph.index[o] for o in graph.outputs], dtype=np.intp)
        shape = (len(values), len(devs), len(devs))
        self.hop_s, self.hop_j, self.hop_usd = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for u, value in enumerate(values):
            size = graph.tensor_bytes(value)
            for p, src in enumerate(self.devices):
                for d, dst in enumerate(self.devices):
                    link = cluster.link(src, dst)
                    t = terms.transfer_time_s(link, size) if p != d else 0.0
                    self.hop_s[u, p, d] = t
                    self.hop_j[u, p, d] = terms.transmit_energy_j(link, t)
                    self.hop_usd[u, p, d] = terms.link_cost_usd(link, t, size)

    def score(self, genes: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        """(total relative violation, objective) of each row of `genes` (population x nodes)."""
        pop, k = genes.shape[0], len(self.devices)
        rows = np.arange(pop)[:, None]
        where = np.concatenate([genes, np.full((pop, self.hop_s.shape[0] - genes.shape[1]), self.origin)], axis=1)
        onehot = genes[:, :, None] == np.arange(k)
        busy = np.where(onehot, self.time[None], 0.0).sum(axis=1)
        used = onehot.any(axis=1)
        needed = np.zeros((pop, where.shape[1], k), dtype=bool)
        needed[rows, self.edge_value[None, :], genes[:, self.edge_reader]] = True
        send = needed & (where[:, :, None] != np.arange(k))
        result = np.zeros((pop, where.shape[1], k), dtype=bool)
        result[rows, self.outputs[None, :], self.origin] = True
        result &= where[:, :, None] != self.origin
        idx = (np.arange(where.shape[1])[None, :, None], where[:, :, None], np.arange(k))
        hops = send.astype(float) + result  # a value may be read on the origin and returned as a result
        hop_s = np.where(hops > 0, self.hop_s[idx], 0.0) * hops
        by_sender = where[:, :, None] == np.arange(k)  # (pop, values, sender)
        link_s = np.einsum("bvp,bvd->bpd", by_sender, np.where(np.isinf(hop_s), 0.0, hop_s))
        link_s[np.einsum("bvp,bvd->bpd", by_sender, np.isinf(hop_s)) > 0] = math.inf  # no link: inf*0 = nan
        sent_j = np.where(hops > 0, self.hop_j[idx], 0.0) * hops
        energy = self.power * busy + np.einsum("bvp,bvd->bp", by_sender, sent_j)
        link_usd = (np.where(hops > 0, self.hop_usd[idx], 0.0) * hops).sum(axis=(1, 2))
        queue = np.where(used, self.queue, 0.0).sum(axis=1)
        latency = busy.sum(axis=1) + hop_s.sum(axis=(1, 2)) + queue
        idle_s = np.where(self.stretch < math.inf, 0.0, math.inf)  # evaluate: 0 / (1 - rho) is inf when rho >= 1
        device_s = np.where(used, np.where(busy > 0, busy * self.stretch, idle_s), 0.0)
        metric = {"latency_s": latency, "energy_j": energy.sum(axis=1), "origin_energy_j": energy[:, self.origin],
                  "cost_usd": (self.price * busy + self.elec * energy).sum(axis=1) + link_usd,
                  "bottleneck_s": np.maximum(device_s.max(axis=1), link_s.max(axis=(1, 2)))}
        objective = sum((w * metric[m] for m, w in self.problem.objective.weights.items() if w), np.zeros(pop))
        return self._violation(onehot, busy, device_s, link_s, metric, hop_s), objective

    def _violation(self, onehot: NDArray[np.bool_], busy: FloatArray, device_s: FloatArray, link_s: FloatArray,
                   metric: dict[str, FloatArray], hop_s: FloatArray) -> FloatArray:
        c = self.problem.constraints
        need = (onehot * self.params[None, :, None]).sum(axis=1) + (onehot * self.working[None, :, None]).max(axis=1)
        excess = np.maximum(need / self.memory - 1.0, 0.0).sum(axis=1)
        excess += np.isinf(hop_s).sum(axis=(1, 2))
        if c.deadline_s is not None:
            excess += np.maximum(metric["latency_s"] / max(c.deadline_s, 1e-300) - 1.0, 0.0)
        if c.origin_energy_budget_j is not None:
            excess += np.maximum(metric["origin_energy_j"] / max(c.origin_energy_budget_j, 1e-300) - 1.0, 0.0)
        if c.request_rate_per_s is not None:
            excess += np.maximum(c.request_rate_per_s * device_s - 1.0, 0.0).sum(axis=1)
            excess += np.maximum(c.request_rate_per_s * link_s - 1.0, 0.0).sum(axis=(1, 2))
        return np.asarray(np.nan_to_num(excess, nan=math.inf), dtype=np.float64)
