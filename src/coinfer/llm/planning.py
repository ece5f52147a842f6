"""What a generation plan optimises: time to first token, time per token, tokens per second, energy per token.

One placement serves both step programs (coinfer.llm.steps), so a solver is run on the one the
objective is about and its placement carried to the other:

- `ttft`: solved on the prefill graph for latency, the prompt's N tokens through every stage
  (compute-bound);
- `time-per-token` (also `latency`, the default): on the decode graph for latency, one decode step,
  each stage's weights and KV cache streamed once (memory-bound) plus the hidden state over each cut;
- `tokens-per-s`: on the decode graph for throughput: with many sessions in flight the stages
  pipeline, and the slowest stage or link sets the pace;
- `energy-per-token`: on the decode graph for energy, one decode step over every device.

Any other objective (`cost`, weighted ones such as `latency=1,energy=0.2`) is the cost model's own,
on the decode graph.
"""

from __future__ import annotations

from dataclasses import replace

from coinfer.cluster import Cluster
from coinfer.errors import UserInputError
from coinfer.llm.steps import StepGraphs
from coinfer.plan import Plan
from coinfer.problem import Problem

LLM_OBJECTIVES = {  # name -> (graph solved on, the cost model's objective)
    "ttft": ("prefill", "latency"),
    "time-per-token": ("decode", "latency"),
    "latency": ("decode", "latency"),
    "tokens-per-s": ("decode", "throughput"),
    "energy-per-token": ("decode", "energy"),
}


def generation_problems(steps: StepGraphs, cluster: Cluster, objective: str = "time-per-token",
                        deadline_s: float | None = None) -> tuple[Problem, Problem]:
    """The prefill and the decode problem on `cluster`, both under the objective's cost-model objective."""
    from coinfer.api import make_problem

    _, core = LLM_OBJECTIVES.get(objective, ("decode", objective))
    return (make_problem(steps.prefill, cluster, objective=core, deadline_s=deadline_s),
            make_problem(steps.decode, cluster, objective=core, deadline_s=deadline_s))


def plan_generation(steps: StepGraphs, problems: tuple[Problem, Problem], *, solver: str | None = None,
                    placement: str | None = None, objective: str = "time-per-token") -> Plan:
    """The decode graph's plan: a one-line `placement` over its nodes, or `solver` (default ilp) run on
    the graph the objective is about."""
    from coinfer.api import plan as make_plan

    if placement is not None and solver is not None:
        raise UserInputError("give either a placement or a solver, not both")
    if placement is not None:
        return make_plan(problems[1], placement=placement)
    graph, _ = LLM_OBJECTIVES.get(objective, ("decode", objective))
    solved = make_plan(problems[0] if graph == "prefill" else problems[1], solver=solver or "ilp")
    if graph == "decode":
        return solved
    return replace(Plan(steps.decode, dict(solved.placement), solved.solver), reported_objective=None)
