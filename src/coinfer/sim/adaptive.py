"""`simulate_adaptive`: serve a plan while a policy watches the traffic and switches plans.

The loop is the one the runtime runs (coinfer.runtime.adaptive; REFERENCE section 4): the policy
gets its initial state from a View with no record, then decides after every completed request,
once the estimator has taken that request's record; it sees the estimator's snapshot applied to
the deploy-time problem (`coinfer.adapt.estimates.apply`).

- A Decision with a plan (other than the one in use) is an *epoch change*: requests already sent
  finish on the plan they started with; requests sent from then on use the new one, under a new
  plan version that every record carries. Decisions take no simulated time.
- A Decision's `probe_links` start the two-point probe of each link (1 KB and 1 MB, twice each;
  `SimCluster.probe`) over the simulated link itself, queueing with request traffic; every probe
  sample goes to the estimator as it arrives. A link whose probe is still running is not probed
  again until it ends, so a policy asking at every request cannot flood it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import simpy

from coinfer.adapt.estimates import Estimates, Estimator, apply
from coinfer.adapt.policy import Decision, Policy, View
from coinfer.adapt.records import HopSample, RequestRecord
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.shaping import BandwidthTrace
from coinfer.sim.arrivals import drive
from coinfer.sim.conditions import Conditions, Link, SpeedTrace
from coinfer.sim.network import Process, SimCluster
from coinfer.sim.result import SimResult, Switch, collect
from coinfer.sim.serving import Background, Execution, Server

log = logging.getLogger(__name__)


class Observer(Protocol):
    """What the loop needs of an estimator (coinfer.adapt.estimates.Estimator meets it)."""

    def observe(self, record: RequestRecord) -> None: ...

    def observe_hop(self, sample: HopSample) -> None: ...

    def snapshot(self, now_s: float) -> Estimates: ...


def simulate_adaptive(problem: Problem, policy: Policy, *, static: Plan, requests: int = 200, in_flight: int = 1,
                      rate_per_s: float | None = None, until_s: float | None = None,
                      traces: Mapping[Link, BandwidthTrace] | None = None,
                      speed: Mapping[str, SpeedTrace] | None = None, estimator: Observer | None = None,
                      half_life_s: float = 5.0, expiry_s: float = 30.0, execution: Execution = "serial",
                      background: Background = "none") -> SimResult:
    """Serve `static` first, then whatever `policy` decides (see the module docstring).

    `estimator` defaults to `coinfer.adapt.estimates.Estimator(problem, half_life_s=...,
    expiry_s=...)`; arrivals, traces, `execution` and `background` are as in `coinfer.sim.simulate`.
    """
    if estimator is None:
        estimator = Estimator(problem, half_life_s=half_life_s, expiry_s=expiry_s)
    conditions = Conditions(dict(traces or {}), dict(speed or {}))
    env = simpy.Environment()
    world = SimCluster(env, problem.cluster, conditions)
    server = Server(world, problem, execution=execution, background=background)
    server.use(static)
    loop = _Loop(env, world, server, problem, policy, estimator, static)
    finished, sent = drive(env, server.request, loop.done, requests=requests, in_flight=in_flight,
                           rate_per_s=rate_per_s, until_s=until_s)
    env.run(until=finished)
    return collect(policy.name, [p.plan for p in server.programs], loop.records, loop.switches, loop.probes,
                   sent=sent[0], deadline_s=problem.constraints.deadline_s, duration_s=float(env.now),
                   conditions=conditions,
                   servers=tuple(d.name for d in problem.cluster.servers))


class _Loop:
    """The policy's side of the run: records, estimator, decisions, probes, switches."""

    def __init__(self, env: simpy.Environment, world: SimCluster, server: Server, problem: Problem, policy: Policy,
                 estimator: Observer, static: Plan) -> None:
        self.env, self.world, self.server, self.problem = env, world, server, problem
        self.policy, self.estimator, self.static = policy, estimator, static
        self.records: list[RequestRecord] = []
        self.switches: list[Switch] = []
        self.probes: list[HopSample] = []
        self.probing: set[Link] = set()
        self.state: Any = policy.initial_state(self._view(None))

    def _view(self, record: RequestRecord | None) -> View:
        now = float(self.env.now)
        estimates = self.estimator.snapshot(now)
        return View(now, self.problem, apply(self.problem, estimates), estimates, self.server.plan, self.static,
                    record, len(self.records))

    def done(self, record: RequestRecord) -> None:
        self.records.append(record)
        self.estimator.observe(record)
        self._apply(self.policy.decide(self._view(record), self.state))

    def _apply(self, decision: Decision) -> None:
        self.state = decision.state
        for link in decision.probe_links:
            if link not in self.probing:
                self.probing.add(link)
                self.env.process(self._probe(link))
        plan, current = decision.plan, self.server.plan
        if plan is None or (dict(plan.placement), dict(plan.codecs)) == (dict(current.placement),
                                                                          dict(current.codecs)):
            return
        before = self.server.version
        after = self.server.use(plan)
        self.switches.append(Switch(float(self.env.now), before, after, str(current), str(plan), decision.reason))
        log.info("%.3f s: plan v%d -> v%d (%s): %s", self.env.now, before, after, decision.reason, plan)

    def _probe(self, link: Link) -> Process:
        def observe(sample: HopSample) -> None:
            self.probes.append(sample)
            self.estimator.observe_hop(sample)

        yield from self.world.probe(link, observe)
        self.probing.discard(link)
