"""`--tensor-parallel auto`: the degree of tensor parallelism a generation plan should use.

Tensor parallelism changes the graph (coinfer.capture.tensor_parallel), so no single solve sees
every degree. Each candidate degree K is captured, solved for the objective, and priced by the cost
model on the step program the objective is about (coinfer.llm.planning); the best feasible plan
wins, and a tie goes to the lower degree (no split at all is bit-exact, a split is within 1e-5).
The candidates: no split, and every K from 2 to the number of devices (at most MAX_DEGREE) that
divides the attention heads and, under grouped-query attention, the key-value heads.

Within a degree the solver still decides half-layer by half-layer: shards it keeps on one device
cost what the unsplit half-layer costs plus its sum (coinfer.cost.parallel_groups), so a degree-K
plan may split some layers and run the others as pipeline stages.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coinfer.cluster import Cluster
from coinfer.cost import evaluate
from coinfer.errors import CoinferError, InfeasibleError, UserInputError
from coinfer.llm.planning import LLM_OBJECTIVES, generation_problems, plan_generation
from coinfer.llm.steps import StepGraphs
from coinfer.plan import Plan
from coinfer.problem import Problem

MAX_DEGREE = 4  # tensor parallelism over 2-4 devices, as the literature runs it over links (not NVLink)
AUTO = "auto"
PlanOf = Callable[[StepGraphs, tuple[Problem, Problem]], Plan]  # a plan the user gave, over given step graphs


@dataclass(frozen=True)
class DegreeCandidate:
    """One degree's plan and what the objective makes of it (inf when it has no feasible plan)."""

    degree: int  # 1: no tensor parallelism
    steps: StepGraphs
    problems: tuple[Problem, Problem]
    plan: Plan | None
    objective_value: float
    error: str | None = None

    @property
    def split_half_layers(self) -> tuple[int, int]:
        """(half-layers whose shards run on two or more devices, half-layers split into shards)."""
        total = len(self.steps.decode.parallel_groups)
        return (0 if self.plan is None else len(self.plan.spread_groups)), total

    def summary(self) -> dict[str, object]:
        spread, total = self.split_half_layers
        return {"degree": self.degree, "objective_value": self.objective_value if math.isfinite(
            self.objective_value) else None, "half_layers_split": spread, "half_layers": total,
            "plan": None if self.plan is None else str(self.plan), "error": self.error}


def is_auto(tensor_parallel: str | int | None) -> bool:
    return str(tensor_parallel).strip().lower() == AUTO


def candidate_degrees(config: Any, devices: int) -> list[int]:
    """No split, and each degree up to the devices (at most MAX_DEGREE) that divides the heads."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    return [1, *(k for k in range(2, min(MAX_DEGREE, devices) + 1) if heads % k == 0 and kv_heads % k == 0)]


def choose_degree(capture: Callable[[str | None], StepGraphs], cluster: Cluster, *, objective: str,
                  solver: str | None = None) -> tuple[DegreeCandidate, Plan, list[DegreeCandidate]]:
    """The best candidate degree, its plan, and every candidate; `capture(tensor_parallel)` makes the step
    graphs of one degree ("2", or None for no split) with the sessions the plan must hold."""
    first = capture(None)
    candidates = []
    for degree in candidate_degrees(first.config, len(cluster.devices)):
        steps = first if degree == 1 else capture(str(degree))
        candidates.append(_solved(degree, steps, cluster, objective, solver))
    best = min(candidates, key=lambda c: (c.objective_value, c.degree))
    if best.plan is None or not math.isfinite(best.objective_value):
        reasons = "; ".join(f"{'no split' if c.degree == 1 else f'degree {c.degree}'}: {c.error}" for c in candidates)
        raise InfeasibleError(f"no degree of tensor parallelism gives a feasible plan ({reasons})")
    return best, best.plan, candidates


def steps_and_plan(capture: Callable[[str | None], StepGraphs], cluster: Cluster, *, tensor_parallel: str | int | None,
                   objective: str, solver: str | None, given: PlanOf | None = None,
                   ) -> tuple[StepGraphs, tuple[Problem, Problem], Plan, list[dict[str, object]] | None]:
    """The step graphs, problems and decode plan of a generation, and what `auto` compared (None for a
    given degree). `given(steps, problems)` is the plan the user gave (a placement, a plan file) or
    None to solve; `auto` refuses one, since it chooses the plan itself."""
    if is_auto(tensor_parallel):
        if given is not None:
            raise UserInputError("--tensor-parallel auto chooses the plan with a solver; drop --plan (Python: the "
                                 "placement), or give a degree")
        best, plan, candidates = choose_degree(capture, cluster, objective=objective, solver=solver)
        return best.steps, best.problems, plan, [c.summary() for c in candidates]
    steps = capture(None if tensor_parallel is None else str(tensor_parallel))
    problems = generation_problems(steps, cluster, objective)
    plan = given(steps, problems) if given is not None else plan_generation(steps, problems, solver=solver,
                                                                          objective=objective)
    return steps, problems, plan, None


def _solved(degree: int, steps: StepGraphs, cluster: Cluster, objective: str, solver: str | None) -> DegreeCandidate:
    problems = generation_problems(steps, cluster, objective)
    try:
        plan = plan_generation(steps, problems, solver=solver, objective=objective)
    except CoinferError as exc:
        return DegreeCandidate(degree, steps, problems, None, math.inf, str(exc))
    prefill, decode = evaluate(steps.prefill_plan(plan), problems[0]), evaluate(plan, problems[1])
    if not (prefill.feasible and decode.feasible):
        why = "; ".join(v.message for v in (*decode.violations, *prefill.violations))
        return DegreeCandidate(degree, steps, problems, plan, math.inf, why)
    graph, _ = LLM_OBJECTIVES.get(objective, ("decode", objective))
    value = prefill.objective_value if graph == "prefill" else decode.objective_value
    return DegreeCandidate(degree, steps, problems, plan, value)
