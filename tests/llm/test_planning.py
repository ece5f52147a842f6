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


def test_the_memory_constraint_holds_every_sessions_kv_cache_and_times_stay(tiny_llama, three) -> None:  # type: ignore[no-untyped-def]
    from coinfer.cost import memory_need_bytes
    from coinfer.errors import InfeasibleError
    from coinfer.files.cluster_file import cluster_from_dict
    from coinfer.llm.steps import check_fits
    from tests.llm.conftest import THREE

    four = tiny_llama.for_sessions(4)
    layer = "model.layers.1"
    kv = tiny_llama.state_bytes[layer]
    assert kv == 2 * 4 * tiny_llama.context * 64 * 4  # keys and values, 4 KV heads, head dim 64, float32
    assert four.decode.node(layer).param_bytes == tiny_llama.decode.node(layer).param_bytes + 3 * kv
    one_problems, four_problems = generation_problems(tiny_llama, three), generation_problems(four, three)
    assert four_problems[1].node_time_s == one_problems[1].node_time_s  # a step reads one session's cache
    split = "positions..model.layers.0@a | model.layers.1@b | model.layers.2..head@c"
    plan = plan_generation(tiny_llama, one_problems, placement=split)
    need = max(memory_need_bytes(tiny_llama.prefill_plan(plan), one_problems[0])["b"],  # the prompt's activations
               memory_need_bytes(plan, one_problems[1])["b"])
    room = {**THREE, "devices": {**THREE["devices"], "b": {"flops_per_s": 1e10, "memory_bytes": need + 2 * kv}}}
    cluster = cluster_from_dict(room, "b with room for two more sessions")
    for steps, fits in ((tiny_llama, True), (tiny_llama.for_sessions(3), True), (four, False)):
        problems = generation_problems(steps, cluster)
        chosen = plan_generation(steps, problems, placement=split)
        if fits:
            check_fits(steps, chosen, problems)
        else:
            with pytest.raises(InfeasibleError, match=r"KV cache of 4 sessions.*device b needs"):
                check_fits(steps, chosen, problems)
