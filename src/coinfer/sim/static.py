"""`simulate`: serve one plan, unchanged, to a stream of requests and return every record."""

from __future__ import annotations

from collections.abc import Mapping

import simpy

from coinfer.adapt.records import RequestRecord
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.shaping import BandwidthTrace
from coinfer.sim.arrivals import drive
from coinfer.sim.conditions import Conditions, Link, SpeedTrace
from coinfer.sim.network import SimCluster
from coinfer.sim.result import SimResult, collect
from coinfer.sim.serving import Background, Execution, Server


def simulate(problem: Problem, plan: Plan, *, requests: int = 100, in_flight: int = 1,
             rate_per_s: float | None = None, until_s: float | None = None,
             traces: Mapping[Link, BandwidthTrace] | None = None,
             speed: Mapping[str, SpeedTrace] | None = None, execution: Execution = "serial",
             background: Background = "none") -> SimResult:
    """Serve `requests` requests with `plan` on `problem`'s cluster.

    Arrivals: a closed loop of `in_flight` outstanding requests, or one request every
    1 / `rate_per_s` seconds when a rate is given; none is sent at or after `until_s`
    (coinfer.sim.arrivals). `traces` gives some directed links a bandwidth trace, `speed` some
    devices a slowdown trace (coinfer.sim.conditions). `execution` and `background`:
    coinfer.sim.serving. With one request in flight and nothing traced, every latency equals
    `cost.evaluate(plan, problem).latency_s`.
    """
    conditions = Conditions(dict(traces or {}), dict(speed or {}))
    env = simpy.Environment()
    server = Server(SimCluster(env, problem.cluster, conditions), problem, execution=execution,
                    background=background)
    server.use(plan)
    records: list[RequestRecord] = []
    finished, sent = drive(env, server.request, records.append, requests=requests, in_flight=in_flight,
                           rate_per_s=rate_per_s, until_s=until_s)
    env.run(until=finished)
    return collect("static", [plan], records, (), (), sent=sent[0], deadline_s=problem.constraints.deadline_s,
                   duration_s=float(env.now), conditions=conditions,
                   servers=tuple(d.name for d in problem.cluster.servers))
