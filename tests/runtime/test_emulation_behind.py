"""When this machine is slower than an emulated device, the record keeps the played device's time.

A worker under emulation holds each stage for the device's predicted time; when its own compute
takes longer (a GPU's stage on this CPU) it can only report the longer time. Policies and the
estimator must see the played devices, and the report must say how far the emulation fell behind.
"""

from __future__ import annotations

from coinfer.plan import parse_plan
from coinfer.runtime.adaptive import AdaptiveRun, _behind, _record, summary
from coinfer.runtime.client import Outcome
from tests.runtime.conftest import DEVICES, tiny_problem


def _report(device: str, node_ids: list[str], held_s: float, target_s: float | None) -> dict[str, object]:
    stage = {"index": 0, "node_ids": node_ids, "compute_s": held_s, "held_s": held_s, "target_s": target_s,
             "at_unix_s": 100.5}
    return {"device": device, "stages": [stage], "hops": [], "inbox": 0}


def test_a_stage_the_host_computed_too_slowly_counts_at_the_played_devices_time() -> None:
    _, problem = tiny_problem("cnn", "stem..add@a | left..head@b")
    plan = parse_plan("stem..add@a | left..head@b", problem.graph, DEVICES)
    first, second = (list(s.node_ids) for s in plan.stages)
    reports = [_report("a", first, 0.0101, 0.010),   # held to the target (a sleep overshoots a little)
               _report("b", second, 0.050, 0.002)]   # the host needed 50 ms for a 2 ms stage
    record = _record(Outcome(7, 0.0, latency_s=0.07), 1, plan, problem, reports, 0.0, 100.0)
    a, b = record.stages
    assert a.seconds == 0.010 and abs(a.behind_s - 0.0001) < 1e-12
    assert b.seconds == 0.002 and abs(b.behind_s - 0.048) < 1e-12
    # the played world's latency: what the client measured less this machine's lag
    assert abs(record.latency_s - (0.07 - 0.0001 - 0.048)) < 1e-12
    unemulated = _record(Outcome(8, 0.0, latency_s=0.07), 1, plan, problem,
                         [_report("b", second, 0.050, None)], 0.0, 100.0)
    assert unemulated.stages[0].seconds == 0.050 and unemulated.stages[0].behind_s == 0.0

    report = summary(AdaptiveRun(records=[record], outcomes=[Outcome(7, 0.0, latency_s=0.07)]), problem)
    assert report["measured_latency_s"]["p50"] == 0.07
    assert abs(report["latency_s"]["p50"] - record.latency_s) < 1e-12
    assert report["emulation_behind"]["stages"] == 1

    behind = _behind([record, unemulated])
    assert behind["stages"] == 1 and behind["of"] == 3 and behind["by_device"] == {"b": 1}
    assert abs(behind["max_ms"] - 48.0) < 1e-9
    assert _behind([])["stages"] == 0
