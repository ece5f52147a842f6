"""`--tensor-parallel auto`: each degree solved and priced, the best kept; shards spread only where the
links make it pay (coinfer.llm.parallel_choice, coinfer.cost.parallel_groups)."""

from __future__ import annotations

from typing import Any

import pytest

from coinfer.cost import evaluate
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.llm import StepGraphs, capture_steps
from coinfer.llm.parallel_choice import candidate_degrees, choose_degree, is_auto
from tests.llm.conftest import NEW_TOKENS, PROMPT_TOKENS


def pair(bandwidth_bits_per_s: float, runtime_s: float = 0.0) -> Any:
    """Two slow devices (compute-bound: splitting a layer halves its time) on one link."""
    return cluster_from_dict({
        "devices": {"a": {"flops_per_s": 2e8, "origin": True}, "b": {"flops_per_s": 2e8}},
        "links": [{"between": ["a", "b"], "bandwidth_bits_per_s": bandwidth_bits_per_s, "latency_s": 1e-4,
                   "runtime_s": runtime_s}]}, "pair")


@pytest.fixture(scope="module")
def captured() -> dict[str | None, StepGraphs]:
    return {split: capture_steps("hf:llama", PROMPT_TOKENS, NEW_TOKENS, layers=1, tensor_parallel=split)
            for split in (None, "2")}


def test_candidates_divide_the_heads_and_stop_at_the_devices(captured: dict[str | None, StepGraphs]) -> None:
    config = captured[None].config  # 12 query heads over 4 key-value heads
    assert candidate_degrees(config, 1) == [1]
    assert candidate_degrees(config, 3) == [1, 2]  # 3 divides the 12 heads, not the 4 key-value heads
    assert candidate_degrees(config, 8) == [1, 2, 4]
    assert is_auto("auto") and is_auto(" AUTO ") and not is_auto("2") and not is_auto(None)


@pytest.mark.parametrize(("bandwidth", "runtime_s", "splits"), [
    (1e10, 0.0, True),  # a fast link: both shards at once beat one device
    (1e6, 0.0, False),  # a slow one: the hidden state's round trips cost more than half a layer
    (1e10, 5.0, False),  # a fast link, but a runtime that spends seconds per message
])
def test_auto_splits_only_where_it_pays(captured: dict[str | None, StepGraphs], bandwidth: float, runtime_s: float,
                                         splits: bool) -> None:
    best, plan, candidates = choose_degree(captured.__getitem__, pair(bandwidth, runtime_s), objective="ttft")
    assert [c.degree for c in candidates] == [1, 2]
    assert (best.degree == 2) == splits
    spread, total = best.split_half_layers
    assert (spread > 0) == splits and (total == 2 if splits else total == 0)
    # the choice is the better of the two under the cost model, on the prefill graph (ttft)
    values = {c.degree: evaluate(c.steps.prefill_plan(c.plan), c.problems[0]).latency_s for c in candidates}
    assert best.objective_value == pytest.approx(min(values.values()), rel=1e-9)
    assert plan is best.plan and {c["degree"] for c in (c.summary() for c in candidates)} == {1, 2}


@pytest.mark.slow
def test_generate_with_auto_runs_the_chosen_split_token_identical() -> None:
    from coinfer.llm import generate

    report = generate("hf:llama", pair(1e10), layers=1, tensor_parallel="auto", objective="ttft",
                      prompt_tokens=PROMPT_TOKENS, max_new_tokens=NEW_TOKENS, stop_at_eos=False, emulate=False,
                      verify=True)
    chosen = [c for c in report["tensor_parallel_choice"] if c["plan"] == report["plan"]]
    assert [c["degree"] for c in chosen] == [2] and chosen[0]["half_layers_split"] == 2
    assert report["verify"]["token_identical"] and len(report["outputs"][0]["tokens"]) == NEW_TOKENS
