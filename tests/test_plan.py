"""Plans: the one-line form prints and parses back; mistakes are named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinfer.errors import PlanError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.plan import Plan, parse_plan

DEVICES = ("phone", "edge", "cloud")


def chain(n: int) -> Graph:
    nodes = tuple(Node(f"layer{i}.conv", (f"layer{i - 1}.conv",) if i else ("input",), 1.0, 1,
                       module=f"layer{i}.conv") for i in range(n))
    return Graph("chain", (GraphInput("input", TensorSpec(4)),), nodes)


@given(st.lists(st.sampled_from(DEVICES), min_size=1, max_size=15))
def test_str_parses_back(devices: list[str]) -> None:
    g = chain(len(devices))
    plan = Plan(g, {n.id: d for n, d in zip(g.nodes, devices, strict=True)})
    assert parse_plan(str(plan), g, DEVICES).placement == plan.placement


def test_stage_form() -> None:
    g = chain(4)
    plan = parse_plan("layer0.conv..layer1.conv@phone | layer2.conv..layer3.conv@edge", g, DEVICES)
    assert str(plan) == "layer0.conv..layer1.conv@phone | layer2.conv..layer3.conv@edge"
    assert [s.device for s in plan.stages] == ["phone", "edge"]


def test_module_prefixes_and_bare_device() -> None:
    g = chain(4)
    assert parse_plan("layer0..layer2@phone | layer3@cloud", g, DEVICES).placement["layer2.conv"] == "phone"
    assert set(parse_plan("edge", g, DEVICES).placement.values()) == {"edge"}


@pytest.mark.parametrize(("text", "expected"), [
    ("layer0.conv..layer1.conv@phone", "leaves 2 node"),
    ("layer0..layer3@gpu", "unknown device 'gpu'"),
    ("layer0..layer3@phone | layer2@edge", "placed twice"),
    ("layer3..layer0@phone", "comes before"),
    ("nothing..layer3@phone", "no node or module"),
    ("layer0 layer3", "should look like"),
])
def test_mistakes(text: str, expected: str) -> None:
    with pytest.raises(PlanError, match=expected):
        parse_plan(text, chain(4), DEVICES)
