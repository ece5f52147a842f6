"""Reliability with replicas: the exact model against hand-worked cases and a brute force over device states."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.api import make_problem
from coinfer.cost import evaluate
from coinfer.cost.reliability import reliability, replicated_reliability, stage_flows
from coinfer.errors import InfeasibleError, ObjectiveError, PlanError
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.files.graph_file import graph_from_dict
from coinfer.files.plan_file import plan_from_dict, plan_to_dict
from coinfer.plan import Plan, parse_plan
from coinfer.problem import Constraints, Problem
from coinfer.solve.replicas import brute_force_standbys, choose_standbys

# input -> a -> b -> c, 1 MB of parameters each; four devices, each failing with its own probability
CHAIN: dict[str, Any] = {
    "version": 1, "name": "three", "input_bytes": 1e3,
    "nodes": [{"id": n, "inputs": [i], "flops": 1e9, "output_bytes": 1e3, "param_bytes": 1e6}
              for n, i in (("a", "input"), ("b", "a"), ("c", "b"))],
}
FAIL = {"o": 0.0, "x": 0.1, "y": 0.2, "z": 0.05}


def _problem(link_failure: float = 0.0, memory: dict[str, float] | None = None,
             min_reliability: float | None = None) -> Problem:
    devices = {d: {"flops_per_s": 1e10, "failure_probability": p, "origin": d == "o",
                   **({"memory_bytes": memory[d]} if memory and d in memory else {})} for d, p in FAIL.items()}
    links = [{"between": [s, t], "bandwidth_bits_per_s": 1e9, "failure_probability": link_failure}
             for s, t in itertools.combinations(FAIL, 2)]
    cluster = cluster_from_dict({"devices": devices, "links": links}, "four.yaml")
    return make_problem(graph_from_dict(CHAIN), cluster, min_reliability=min_reliability)


def _oracle(plan: Plan, problem: Problem) -> float:
    """Every up/down state of every device, the runtime's failover rule (`Plan.failover`) and the
    links the cost model's transfers of the placement reached use, summed by hand."""
    devices = problem.cluster.device_names
    p_dev = {d: problem.cluster.device(d).failure_probability for d in devices}
    total = 0.0
    for dev_down in itertools.product((False, True), repeat=len(devices)):
        down = {d for d, x in zip(devices, dev_down, strict=True) if x}
        p_devices = math.prod(p_dev[d] if x else 1 - p_dev[d] for d, x in zip(devices, dev_down, strict=True))
        moved = plan.failover(down)
        if moved is None or p_devices == 0:
            continue
        used = {(t.source, t.target) for t in evaluate(Plan(moved.graph, moved.placement), problem).transfers}
        links_up = math.prod(1 - problem.cluster.link(s, t).failure_probability for s, t in used)  # type: ignore[union-attr]
        total += p_devices * links_up
    return total


def test_without_standbys_the_survey_product_is_kept() -> None:
    problem = _problem(link_failure=0.01)
    plan = parse_plan("a@x | b..c@y", problem.graph, problem.cluster.device_names)
    # x and y compute; o->x, x->y, y->o carry data
    assert reliability(plan, problem) == pytest.approx(0.9 * 0.8 * 0.99**3)
    assert evaluate(plan, problem).reliability == pytest.approx(_oracle(plan, problem))


def test_a_stage_fails_only_when_all_its_replicas_fail() -> None:
    problem = _problem()
    plan = parse_plan("a..c@x+y+z", problem.graph, problem.cluster.device_names)
    assert reliability(plan, problem) == pytest.approx(1 - 0.1 * 0.2 * 0.05)
    # a device shared by two replica groups is counted once: x fails both stages at once
    shared = parse_plan("a@x+y | b..c@x+z", problem.graph, problem.cluster.device_names)
    exact = 0.9 + 0.1 * (0.8 * 0.95)  # x up; or x down and both standbys up
    assert reliability(shared, problem) == pytest.approx(exact)
    assert reliability(shared, problem) > (1 - 0.1 * 0.2) * (1 - 0.1 * 0.05)  # the group product: a lower bound


placements = st.lists(st.sampled_from(["o", "x", "y", "z"]), min_size=3, max_size=3)


@settings(deadline=None, max_examples=80)
@given(placements, st.lists(st.lists(st.sampled_from(["o", "x", "y", "z"]), max_size=2, unique=True),
                            min_size=3, max_size=3), st.sampled_from([0.0, 0.02]))
def test_the_exact_model_equals_brute_force_over_every_device_and_link_state(
        primaries: list[str], standbys: list[list[str]], link_failure: float) -> None:
    problem = _problem(link_failure)
    spare = {n: tuple(d for d in s if d != p) for n, p, s in zip("abc", primaries, standbys, strict=True)}
    plan = Plan(problem.graph, dict(zip("abc", primaries, strict=True)), standbys=spare)
    assert reliability(plan, problem) == pytest.approx(_oracle(plan, problem), abs=1e-12)
    # and the closed form equals the enumeration when there are no standbys
    bare = Plan(problem.graph, plan.placement)
    assert reliability(bare, problem) == pytest.approx(
        replicated_reliability(bare.stages, stage_flows(bare, problem), problem), abs=1e-12)


def test_standbys_need_memory_for_the_weights_they_hold() -> None:
    problem = _problem()
    plan = parse_plan("a..b@x+y | c@z+y", problem.graph, problem.cluster.device_names)
    memory = evaluate(plan, problem).memory_by_device_bytes
    assert memory["y"] >= 3e6 and memory["x"] >= 2e6 and memory["z"] >= 1e6
    b = evaluate(plan, problem)
    # standbys add no latency: the same as the plan without them
    assert b.latency_s == evaluate(Plan(plan.graph, plan.placement), problem).latency_s


def test_the_one_line_form_and_the_plan_file_carry_standbys() -> None:
    problem = _problem()
    text = "a@x+y+z | b..c@y+o"
    plan = parse_plan(text, problem.graph, problem.cluster.device_names)
    assert str(plan) == text
    assert [s.replicas for s in plan.stages] == [("x", "y", "z"), ("y", "o")]
    again, _ = plan_from_dict(json.loads(json.dumps(plan_to_dict(plan, problem))))
    assert again.standbys == plan.standbys and str(again) == text
    assert plan.failover({"x"}) is not None and str(plan.failover({"x"})) == "a@y+z | b..c@y+o"
    assert str(plan.failover({"y"})) == "a@x+z | b..c@o"
    assert plan.failover({"y", "o"}) is None


@pytest.mark.parametrize(("text", "message"), [
    ("a..c@x+x", "standby 'x' is the device it runs on"),
    ("a..c@x+y+y", "names a standby twice"),
    ("a..c@x+mars", "unknown device 'mars'"),
])
def test_bad_standbys_are_named(text: str, message: str) -> None:
    problem = _problem()
    with pytest.raises(PlanError, match=message):
        parse_plan(text, problem.graph, problem.cluster.device_names)


def test_a_plan_file_with_a_standby_outside_the_cluster_is_refused() -> None:
    problem = _problem()
    doc = plan_to_dict(parse_plan("a..c@x+y", problem.graph, problem.cluster.device_names), problem)
    doc["standbys"]["a"] = ["mars"]
    with pytest.raises(PlanError, match="'standbys' names device"):
        plan_from_dict(doc, "p.json")


def test_min_reliability_is_a_constraint_with_a_message_that_says_what_to_do() -> None:
    problem = _problem(min_reliability=0.99)
    plan = parse_plan("a..c@x", problem.graph, problem.cluster.device_names)
    (v,) = [v for v in evaluate(plan, problem).violations if v.kind == "reliability"]
    assert v.value == pytest.approx(0.9) and "standbys" in v.message
    with pytest.raises(ObjectiveError, match="probability"):
        Constraints(min_reliability=1.5)


@pytest.mark.parametrize("target", [0.95, 0.99, 0.999, 0.9999])
@pytest.mark.parametrize("primary", ["a..c@x", "a@x | b..c@y", "a@y | b@z | c@x"])
def test_chosen_standbys_meet_the_target_whenever_brute_force_can(target: float, primary: str) -> None:
    problem = _problem(min_reliability=target, memory={"o": 2.5e6})  # the origin holds two nodes at most
    plan = parse_plan(primary, problem.graph, problem.cluster.device_names)
    best = brute_force_standbys(plan, problem)
    if best is None:
        with pytest.raises(InfeasibleError, match="the best found is"):
            choose_standbys(plan, problem)
        return
    chosen = choose_standbys(plan, problem)
    b = evaluate(chosen, problem)
    assert b.feasible and b.reliability >= target and chosen.placement == plan.placement
    count, fewest = (sum(len(s.standbys) for s in p.stages) for p in (chosen, best))
    assert count <= 2 * fewest  # greedy, not exact: on these cases never more than twice the fewest


def test_an_unreachable_target_names_the_best_reliability_possible() -> None:
    problem = _problem(min_reliability=0.9999, memory={"o": 2.5e6})  # the origin cannot hold all three nodes
    plan = parse_plan("a..c@x", problem.graph, problem.cluster.device_names)
    with pytest.raises(InfeasibleError, match=r"the best found is 0\.999 "):
        choose_standbys(plan, problem)
