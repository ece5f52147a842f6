"""How long an adaptive policy takes to decide, per request and at the requests where it looks again.

Models and deadlines of the adaptive paper (REFERENCE section 4: VGG16 700 ms, AlexNet 250 ms,
MobileNetV2 200 ms) on the pi-laptop-desktop preset, roofline node times, objective latency. The
static plan is the paper's kind of split: the first half of the nodes on the edge, the rest on the
fog (on this preset the cloud has no link back to the edge, so no plan that ends on the cloud can
run). Each policy serves a replay (`coinfer.adapt.synthetic.Replay`) whose truth changes every 150
requests: as configured; the fog -> cloud and edge -> fog links throttled to 5 Mbit/s (the
paper's experiment); the fog 3x slower; as configured again. Only `policy.decide` is timed; a
*look* is a decision that gives a reason (reap's phase changes and window ends, partial's and
resolve's looks). Also timed: the estimator's snapshot + `apply` the runtime does before each
decision, and `initial_state` (once per serving run). Timings are for this machine only.

    .venv/bin/python benchmarks/adapt_decision_speed.py
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import coinfer
from coinfer.adapt.estimates import apply
from coinfer.adapt.policies import POLICIES, get_policy
from coinfer.adapt.policy import Decision, View
from coinfer.adapt.synthetic import Replay
from coinfer.api import make_problem
from coinfer.files.cluster_file import load_cluster
from coinfer.plan import Plan
from coinfer.problem import Problem

MODELS = (("vgg16", 0.700), ("alexnet", 0.250), ("mobilenet_v2", 0.200))
PHASE_REQUESTS = 150
PHASES = 4


class Timed:
    """A policy whose `decide` calls are timed (milliseconds, with whether the decision gave a reason)."""

    def __init__(self, name: str) -> None:
        self.inner = get_policy(name)
        self.name = name
        self.samples: list[tuple[float, bool]] = []
        self.initial_ms = 0.0

    def initial_state(self, view: View) -> Any:
        start = time.perf_counter()
        state = self.inner.initial_state(view)
        self.initial_ms = (time.perf_counter() - start) * 1e3
        return state

    def decide(self, view: View, state: Any) -> Decision:
        start = time.perf_counter()
        decision = self.inner.decide(view, state)
        self.samples.append(((time.perf_counter() - start) * 1e3, bool(decision.reason)))
        return decision


def truths(problem: Problem) -> list[Problem]:
    def throttled(p: Problem) -> Problem:
        links = tuple(dataclasses.replace(lk, bandwidth_bits_per_s=5e6)
                      if (lk.source, lk.target) in {("fog", "cloud"), ("edge", "fog")} else lk
                      for lk in p.cluster.links)
        return dataclasses.replace(p, cluster=dataclasses.replace(p.cluster, links=links))

    slow_fog = dict(problem.node_time_s)
    slow_fog["fog"] = {n: 3.0 * t for n, t in slow_fog["fog"].items()}
    return [problem, throttled(problem), dataclasses.replace(problem, node_time_s=slow_fog), problem]


def half_split(problem: Problem) -> Plan:
    half = len(problem.graph.nodes) // 2
    return Plan(problem.graph, {n.id: "edge" if k < half else "fog" for k, n in enumerate(problem.graph.nodes)})


def main() -> None:
    cluster = load_cluster("pi-laptop-desktop")
    print("| model | nodes | policy | decisions | median ms | looks | median ms at a look | max ms at a look "
          "| initial_state ms | switches |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    snapshot_ms: dict[str, float] = {}
    for model, deadline_s in MODELS:
        graph = coinfer.capture(f"torchvision:{model}")
        problem = make_problem(graph, cluster, objective="latency", deadline_s=deadline_s)
        static = half_split(problem)
        for name in POLICIES:
            timed = Timed(name)
            replay = Replay(timed, problem, static)
            switches = 0
            for truth in truths(problem)[:PHASES]:
                for _ in range(PHASE_REQUESTS):
                    switches += replay.step(truth).plan is not None
            all_ms = [ms for ms, _ in timed.samples]
            look_ms = [ms for ms, look in timed.samples if look]
            print(f"| {model} | {len(graph.nodes)} | {name} | {len(all_ms)} | {statistics.median(all_ms):.3f} "
                  f"| {len(look_ms)} | {statistics.median(look_ms) if look_ms else 0:.2f} "
                  f"| {max(look_ms) if look_ms else 0:.2f} | {timed.initial_ms:.1f} | {switches} |")
            if name == "partial":
                snapshot_ms[model] = _snapshot_ms(replay)
    for model, ms in snapshot_ms.items():
        print(f"estimator snapshot + apply before each decision, {model}: {ms:.3f} ms (median)")


def _snapshot_ms(replay: Replay) -> float:
    samples = []
    for _ in range(50):
        start = time.perf_counter()
        estimates = replay.estimator.snapshot(replay.now_s)
        apply(replay.base, estimates)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


if __name__ == "__main__":
    main()
