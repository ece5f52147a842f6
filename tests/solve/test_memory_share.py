"""exo's memory-proportional split: contiguous shares of the parameters, largest memory first."""

from __future__ import annotations

from coinfer.api import make_problem
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.files.graph_file import graph_from_dict
from coinfer.solve import SOLVERS


def _problem(memories: dict[str, float], layers: int = 10):  # type: ignore[no-untyped-def]
    nodes = [{"id": f"l{i}", "inputs": [f"l{i - 1}" if i else "input"], "flops": 1e6, "output_bytes": 10,
              "param_bytes": 1000} for i in range(layers)]
    nodes.insert(0, {"id": "mask", "inputs": ["input"], "flops": 1, "output_bytes": 1})  # no parameters
    nodes[1]["inputs"] = ["mask"]
    devices = {name: {"flops_per_s": 1e9, "memory_bytes": m, **({"origin": True} if i == 0 else {})}
               for i, (name, m) in enumerate(memories.items())}
    links = [{"between": [a, b], "bandwidth_bits_per_s": 1e8} for a in memories for b in memories if a < b]
    graph = graph_from_dict({"version": 1, "input_bytes": 10, "nodes": nodes})
    return make_problem(graph, cluster_from_dict({"devices": devices, "links": links}, "c"))


def test_shares_follow_memory_largest_first() -> None:
    plan = SOLVERS["exo"](_problem({"small": 4e9, "big": 8e9, "big2": 8e9}))
    counts = {d: sum(1 for n, dev in plan.placement.items() if dev == d and n != "mask") for d in plan.devices_used}
    assert counts == {"big": 4, "big2": 4, "small": 2}
    order = [plan.placement[f"l{i}"] for i in range(10)]
    assert order == ["big"] * 4 + ["big2"] * 4 + ["small"] * 2  # contiguous, largest memory first
    assert plan.placement["mask"] == "big" and plan.solver == "exo"


def test_it_ignores_speed_which_is_the_point_of_comparing_with_it() -> None:
    fast_small = _problem({"slow": 8e9, "fast": 2e9})
    plan = SOLVERS["exo"](fast_small)
    assert sum(1 for d in plan.placement.values() if d == "slow") == 9  # 8 layers plus the mask
