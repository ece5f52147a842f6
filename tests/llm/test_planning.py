"""Generation plans: each LLM objective solved on its step program, one placement for both."""

from __future__ import annotations

import pytest

from coinfer.cost import evaluate
from coinfer.errors import UserInputError
from coinfer.llm.planning import generation_problems, plan_generation
from coinfer.solve import SOLVERS


@pytest.mark.parametrize("objective", ["time-per-token", "ttft", "tokens-per-s", "energy-per-token"])
def test_each_objective_places_the_decode_graph_no_worse_than_the_baselines(  # type: ignore[no-untyped-def]
        objective, tiny_llama, three) -> None:
    problems = generation_problems(tiny_llama, three, objective)
    plan = plan_generation(tiny_llama, problems, solver="ilp", objective=objective)
    assert plan.graph is tiny_llama.decode and set(plan.placement) == {n.id for n in tiny_llama.decode.nodes}
    solved_on = problems[0] if objective == "ttft" else problems[1]
    own = evaluate(tiny_llama.prefill_plan(plan) if objective == "ttft" else plan, solved_on).objective_value
    for baseline in ("origin-only", "exo", "pipeline-dp"):
        other = SOLVERS[baseline](problems[1])
        other_cost = evaluate(tiny_llama.prefill_plan(other) if objective == "ttft" else other, solved_on)
        assert own <= other_cost.objective_value * (1 + 1e-9), baseline


def test_a_placement_and_a_solver_together_are_refused(tiny_llama, three) -> None:  # type: ignore[no-untyped-def]
    problems = generation_problems(tiny_llama, three)
    with pytest.raises(UserInputError, match="either a placement or a solver"):
        plan_generation(tiny_llama, problems, solver="ilp", placement="positions..head@a")
