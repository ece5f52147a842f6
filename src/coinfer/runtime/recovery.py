"""Recovery by re-planning: when a device is lost, serve on a plan without it; when it is back, re-admit it.

A `Recovery` is the `Rerouter` (coinfer.runtime.delivery) of `coinfer run` and of the Python API.
Between messages it takes what changed (coinfer.runtime.availability, over the watchdog's verdicts)
and decides:

- a device **down** that a deployed version uses: the problem is re-solved on the cluster less every
  device that is down, with the plan's own solver, or the first feasible of `FALLBACK_SOLVERS`
  (`replacement_plan`); the new plan is deployed as the next version on the devices still up (each
  worker is sent only the weights its cache lacks) and the requests in flight on the lost
  versions are replayed there by the caller;
- a device that answers again is **re-admitted** after a full health check; once every device of
  the plan the run started with is back, the run returns to that plan. That deployment runs in
  the background on a side channel of the client, while requests go on on the plan in use; new
  requests move to it once it is live, and requests in flight finish where they are;
- a **link** that stopped carrying traffic (its receiver no longer hears its sender's keepalives)
  is handled as a lost device is: the re-plan is on the cluster less that directed link;
- a plan with **standbys** (`first..last@primary+standby`) has, beside it from the start, one
  version per primary device deployed with that device's stages on their standbys
  (`prepare_standbys`): losing that device switches to its version at once, with no solve and
  nothing to send (action "failed over to standbys");
- **degraded** is recorded on the timeline, and left to the adaptive policies, which see it.

The origin cannot be replaced: requests enter there, so losing it ends the run with an
UnreachableError that says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from coinfer.cost import evaluate, list_transfers
from coinfer.errors import CoinferError, UnreachableError, WorkerError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.runtime.availability import HEALTH_CHECK_S, Availability
from coinfer.runtime.batching import at_batch
from coinfer.runtime.client import Client
from coinfer.runtime.delivery import Reroute
from coinfer.runtime.deploy import deploy, taking_part
from coinfer.runtime.options import ClientAddress, Endpoint, RunOptions
from coinfer.runtime.watchdog import HealthEvent, Watchdog
from coinfer.solve.fallback import replacement_plan

log = logging.getLogger(__name__)

MAX_DEPLOY_ATTEMPTS = 4  # another device may be lost while a replacement is being deployed


@dataclass(frozen=True)
class TimelineEntry:
    """One change of a device's verdict and what the run did about it."""

    at_s: float  # time.perf_counter() of the verdict
    device: str
    state: str  # down | up | degraded
    detail: str
    action: str  # re-planned | re-admitted | back to the plan | noted
    to_version: int | None = None
    plan: str | None = None
    deploy_s: float = 0.0  # solving and deploying the replacement


class Recovery:
    """Keeps `plan` served through lost devices (see the module docstring)."""

    def __init__(self, client: Client, plan: Plan, problem: Problem, endpoint: Endpoint, options: RunOptions,
                 watchdog: Watchdog, client_address: ClientAddress | None = None, *, everywhere: bool = False,
                 replan: Callable[[Plan, Problem], Plan] = replacement_plan, return_to_base: bool = True) -> None:
        self.client, self.problem, self.endpoint, self.options = client, problem, endpoint, options
        self.watchdog, self.client_address, self.everywhere, self.replan = watchdog, client_address, everywhere, replan
        self.return_to_base = return_to_base  # off under an adaptive policy: it decides when work moves back
        self.base = self.current = plan
        # cluster devices no worker plays cannot take work over
        self.absent = {d for d in problem.cluster.device_names if d not in client.workers}
        self.version = self._last_version = options.plan_version
        self.plans: dict[int, Plan] = {self.version: plan}
        self.available = Availability(client, watchdog)
        self.timeline: list[TimelineEntry] = []
        self._admitting: _Admission | None = None  # a deployment running in the background
        self._reconsider: HealthEvent | None = None  # a change that came while it ran
        # primary device -> the version deployed beside the plan that its standbys take over with
        self.prepared: dict[str, tuple[int, Plan]] = {}
        self.expect(self.version, plan, problem)
        watchdog.watch_links(self.sends_over(plan))

    def expect(self, version: int, plan: Plan, problem: Problem) -> None:
        """Tell the watchdog what each stage of `version` should take (degraded's yardstick)."""
        batched_plan, batched_problem = at_batch(plan, problem, self.options.micro_batch)
        stages = evaluate(batched_plan, batched_problem).stages
        self.watchdog.expect(version, {i: s.compute_s for i, s in enumerate(stages)})

    @property
    def down(self) -> set[str]:
        return self.available.down

    @property
    def cut(self) -> set[tuple[str, str]]:
        """Directed links that stopped carrying traffic."""
        return self.available.cut

    def uses(self, plan: Plan) -> set[str]:
        return set(taking_part(plan, self.problem))

    def sends_over(self, plan: Plan) -> set[tuple[str, str]]:
        """The directed links a request of `plan` crosses."""
        return {(t.source, t.target) for t in list_transfers(plan, self.problem)}

    def lost(self, plan: Plan) -> bool:
        """Whether `plan` needs a device that is down or a link that is cut."""
        return bool(self.uses(plan) & self.down or self.sends_over(plan) & self.cut)

    # -- standbys --------------------------------------------------------------------------------

    def prepare_standbys(self) -> list[int]:
        """Deploy, beside the plan, the plan that its standbys serve with when one primary device is
        lost (`Plan.failover`), one version per such device, so that failing over is a change of
        version: no solve, no deployment, no weights to send. The versions deployed."""
        jobs = [(device, self.next_version(), plan) for device, plan in self.failovers(self.base)
                if device not in self.prepared]
        for device, version, plan in jobs:
            deploy(self.client, plan, self.problem, self.endpoint, replace(self.options, plan_version=version),
                   self.client_address, everywhere=self.everywhere)
            self.prepared[device] = (version, plan)
        return [version for _, version, _ in jobs]

    def failovers(self, plan: Plan) -> list[tuple[str, Plan]]:
        """(primary device, the plan without it) for each device whose every stage has a standby."""
        out = []
        for device in plan.devices_used:
            moved = plan.failover({device}) if device != self.problem.origin else None
            if moved is not None and (moved.placement != plan.placement or moved.tilings != plan.tilings):
                out.append((device, moved))
        return out

    def _prepared_for_loss(self) -> tuple[int, Plan] | None:
        """The prepared version for what was lost, when the base plan lost exactly one primary device."""
        if self.current.placement != self.base.placement or self.sends_over(self.current) & self.cut:
            return None
        lost = self.uses(self.current) & self.down
        entry = self.prepared.pop(next(iter(lost)), None) if len(lost) == 1 else None
        return entry if entry is not None and not self.lost(entry[1]) else None

    # -- the Rerouter protocol -----------------------------------------------------------------

    def reroute(self) -> Reroute | None:
        taken = self.available.take()
        self._forget_prepared_on(taken.restarted)
        for event in taken.unchanged:
            self.timeline.append(TimelineEntry(event.at_s, event.device, event.state, event.detail, "noted"))
        changed = taken.changed
        if self.problem.origin in self.down:
            raise UnreachableError(f"the origin {self.problem.origin!r} is down: requests enter there, so no other "
                                   f"device can take its place; restart its worker", self.problem.origin)
        if any(e.state == "down" for e in changed):
            if self.lost(self.current):
                return self._replace(next(e for e in changed if e.state == "down"))
            for e in changed:
                if e.state == "down":
                    self.timeline.append(TimelineEntry(e.at_s, e.device, e.state, e.detail,
                                                       "noted (the plan in use does not need it)"))
            stale = frozenset(v for v, p in self.plans.items() if self.lost(p))
            if stale:  # requests on an older version that used it: replayed on the plan in use
                return Reroute(self.version, stale)
        if changed and self.return_to_base:
            self._reconsider = changed[-1]
        for event in changed if not self.return_to_base else ():
            if event.state != "down":
                self._log(event, "re-admitted", None, None, time.perf_counter())
        admitted = self._admitted()
        if admitted is None:
            self._admit()
        return admitted

    def lacks_version(self, errors: list[dict[str, Any]]) -> bool:
        """See `Availability.lacks_version`: the Rerouter's way to hear of a restarted worker."""
        return self.available.lacks_version(errors)

    def unreachable(self, error: UnreachableError) -> None:
        self.available.unreachable(error)

    def adopt(self, version: int, plan: Plan) -> None:
        """A plan the caller deployed itself (an adaptive policy's switch) is now the one in use."""
        self._last_version = max(self._last_version, version)
        self._adopt(version, plan, self.problem)

    def next_version(self) -> int:
        """A version never used in this run (a dropped background deployment's included)."""
        self._last_version += 1
        return self._last_version

    def retire(self, busy_versions: set[int]) -> None:
        for v in [v for v in self.plans if v != self.version and v not in busy_versions]:
            holders = set(self.client.workers) if self.everywhere else self.uses(self.plans[v])
            for device in sorted(holders - self.down):
                try:
                    self.client.call(device, {"op": "undeploy", "plan_version": v}, HEALTH_CHECK_S)
                except WorkerError as exc:  # it keeps a stale version until it is next deployed to, harmlessly
                    log.warning("could not undeploy version %d on %s: %s", v, device, exc)
            del self.plans[v]

    # -- steps ----------------------------------------------------------------------------------

    def _forget_prepared_on(self, restarted: set[str]) -> None:
        """A worker that restarted lost the standbys' versions it held: they are prepared again when
        the run returns to its plan."""
        self.prepared = {d: (v, p) for d, (v, p) in self.prepared.items() if not self.uses(p) & restarted}

    def _target(self) -> tuple[Plan, Problem, bool]:
        """The plan the devices up now call for, the problem it is for, and whether it is the base plan."""
        usable = self.problem.without(self.down | self.absent, self.cut)
        if not self.lost(self.base) and not self.uses(self.base) & self.absent:
            return self.base, usable, True
        return self.replan(self.current, usable), usable, False

    def _replace(self, cause: HealthEvent) -> Reroute:
        """A device the plan in use needs is down: deploy a plan without it now, while requests wait."""
        start_s = time.perf_counter()
        self._admitting = None  # a re-admission under way was planned with that device: its result is dropped
        lost = frozenset(v for v, p in self.plans.items() if self.lost(p))
        prepared = self._prepared_for_loss()
        if prepared is not None:  # a standby takes over: its version is deployed and its weights loaded
            version, plan = prepared
            self._adopt(version, plan, self.problem.without(self.down | self.absent, self.cut))
            self._log(cause, "failed over to standbys", version, str(plan), start_s)
            return Reroute(version, lost)
        for _ in range(MAX_DEPLOY_ATTEMPTS):
            target, usable, back = self._target()
            version = self.next_version()
            try:
                deploy(self.client, target, usable, self.endpoint, replace(self.options, plan_version=version),
                       self.client_address, everywhere=self.everywhere)
            except UnreachableError as exc:  # one more device lost while deploying: leave it out too
                if exc.device is None or exc.device == self.problem.origin:
                    raise
                log.warning("re-planning: %s; leaving it out", exc)
                self.available.down.add(exc.device)
                self.client.unreachable.add(exc.device)
                continue
            lost = frozenset(v for v, p in self.plans.items() if self.lost(p))
            self._adopt(version, target, usable)
            self._log(cause, "back to the plan" if back else "re-planned", version, str(target), start_s)
            return Reroute(version, lost)
        raise WorkerError(f"could not deploy a replacement plan after {MAX_DEPLOY_ATTEMPTS} attempts; devices down: "
                          f"{', '.join(sorted(self.down))}")

    def _admit(self) -> None:
        """A device came back (or one the plan does not use went down): deploy the plan that calls for
        in the background, so that requests keep flowing on the plan in use meanwhile."""
        if self._reconsider is None or self._admitting is not None:
            return
        cause, self._reconsider = self._reconsider, None
        target, usable, back = self._target()
        if target.placement == self.current.placement:
            self._log(cause, "noted" if cause.state == "down" else "re-admitted", None, None, time.perf_counter())
            return
        options = replace(self.options, plan_version=self.next_version())
        # back on the plan with standbys: prepare their versions again, in the same background job
        standbys = [(d, self.next_version(), p) for d, p in self.failovers(target) if d not in self.prepared] \
            if back else []
        self._admitting = _Admission(self, cause, target, usable, back, options, standbys)
        self._admitting.start()

    def _admitted(self) -> Reroute | None:
        """The background deployment's plan, once it is live and still usable."""
        job = self._admitting
        if job is None or job.is_alive():
            return None
        self._admitting = None
        if job.error is not None or self.lost(job.target):
            log.warning("re-admission of %s not used: %s", job.cause.device, job.error or "a device it needs is down")
            self._reconsider = self._reconsider or job.cause
            return None
        self._adopt(job.options.plan_version, job.target, job.usable)
        self.prepared.update({device: (version, plan) for device, version, plan in job.prepared})
        self._log(job.cause, "back to the plan" if job.back else "re-admitted", job.options.plan_version,
                  str(job.target), job.start_s)
        return Reroute(job.options.plan_version, frozenset())

    def _adopt(self, version: int, plan: Plan, usable: Problem) -> None:
        self.plans[version], self.version, self.current = plan, version, plan
        self.expect(version, plan, usable)
        self.watchdog.watch_links(self.sends_over(plan) | self.cut)  # a cut link is watched until it is back

    def _log(self, cause: HealthEvent, action: str, version: int | None, plan: str | None, start_s: float) -> None:
        took = time.perf_counter() - start_s
        self.timeline.append(TimelineEntry(cause.at_s, cause.device, cause.state, cause.detail, action, version,
                                           plan, took))
        if version is not None:
            log.warning("%s %s: %s -> version %d (%s) in %.2f s", cause.device, cause.state, action, version, plan,
                        took)

    def report(self, start_s: float) -> list[dict[str, Any]]:
        """The timeline as the run report lists it, in seconds since `start_s`."""
        return [{**vars(e), "at_s": e.at_s - start_s} for e in self.timeline]


class _Admission(threading.Thread):
    """Deploying a plan on a side channel of the client, while the caller's thread serves requests."""

    def __init__(self, recovery: Recovery, cause: HealthEvent, target: Plan, usable: Problem, back: bool,
                 options: RunOptions, standbys: list[tuple[str, int, Plan]]) -> None:
        super().__init__(name="coinfer-readmission", daemon=True)
        self.recovery, self.cause, self.target, self.usable, self.back = recovery, cause, target, usable, back
        self.options, self.standbys = options, standbys
        self.prepared: list[tuple[str, int, Plan]] = []  # the standbys' versions deployed
        self.start_s = time.perf_counter()
        self.error: str | None = None

    def run(self) -> None:
        r = self.recovery
        channel = r.client.side_channel()
        try:
            deploy(channel, self.target, self.usable, r.endpoint, self.options, r.client_address,
                   everywhere=r.everywhere)
            for device, version, plan in self.standbys:
                deploy(channel, plan, self.usable, r.endpoint, replace(self.options, plan_version=version),
                       r.client_address, everywhere=r.everywhere)
                self.prepared.append((device, version, plan))
        except CoinferError as exc:
            self.error = str(exc)
        finally:
            channel.close_side_channel()
