"""`reap`: the adaptive edge-fog-cloud partitioner of Deng, Butkus, Lapkovskis, Donta (arXiv 2605.09623).

REFERENCE section 4, every step, with the paper's defaults (module constants):
1. Weights W_d from the profile, and sigma per device (`reap_model`).
2. Link models (omega, beta) per hop: the two-point probe, run by the runtime when a decision
   lists `probe_links` and fitted by `coinfer.adapt.estimates`; the policy reads them from
   `view.problem` (the problem with the estimates applied).
3. The estimate of a split (i, j) (origin [0, i), fog [i, j), cloud [j, N) of the topological order):
   t_d = sigma_d * sum W_d, hops omega + b / beta, energy from the power model (`reap_model`).
4. Search all (i, j): drop those predicted over the deadline (`constraints.deadline_s`), score
   S = 0.6 E_edge / n_edge + 0.3 E_total / n_total + 0.1 L / n_lat (n: means over the three probe
   splits), drop those scoring worse than the static split, take the argmin.
5. Schedule: `BASELINE_RUNS` requests on the static split; `PROBE_SPLITS` probe splits at fifths of
   the node range, `PROBE_RUNS` requests each; back to the static split; then windows of
   `WINDOW_RUNS` requests. At each window end: refit sigma from the window's measured stage
   times, re-search, switch if the score improves by at least `HYSTERESIS`; if no candidate
   remains, fall back to the static split. A measured deadline miss forces a switch to the best
   candidate other than the split in use, hysteresis waived.

Where the paper is silent (ours, and said so): the probe splits are (N/5, 2N/5), (2N/5, 3N/5) and
(3N/5, 4N/5), each moved to the nearest split the cluster's links can run; n are the measured means
of latency and of the origin's and all devices' energy over the probe runs (the model's prediction
for the probe splits when records carry no energy); the "worse than static" filter applies only
when the static split itself is predicted to meet the deadline; link probes are asked once at the
start and `PROBE_LEAD` requests before each window end, so the re-search sees fresh links; a miss
forces a switch only after `MISS_COOLDOWN` requests under the plan in use, so an unreachable
deadline does not switch plans on every request. Requests count toward a phase only when sent
after it began (those in flight at a switch ran the previous plan).

Needs a chain of three devices with one origin: origin -> fog -> cloud (`chain_devices`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

import numpy as np

from coinfer.adapt.policies.reap_model import ChainModel, Estimate, Split
from coinfer.adapt.policies.switching import (
    check_count,
    check_fraction,
    deadline_missed,
    describe,
    improves,
    same_placement,
    with_codecs,
)
from coinfer.adapt.policy import Decision, View
from coinfer.adapt.probing import LinkId
from coinfer.adapt.records import RequestRecord
from coinfer.cluster import Cluster
from coinfer.errors import UserInputError
from coinfer.plan import Plan

BASELINE_RUNS = 50  # paper: 50 runs of the static split
PROBE_SPLITS = 3  # paper: 3 probe splits at fifths of the layer range
PROBE_RUNS = 15  # paper: 15 runs of each probe split
WINDOW_RUNS = 100  # paper: windows of 100 inferences
SCORE_WEIGHTS = (0.6, 0.3, 0.1)  # paper: S = 0.6 E_edge/n_edge + 0.3 E_total/n_total + 0.1 L/n_lat
HYSTERESIS = 0.03  # paper: switch only when the score improves by at least 3%
PROBE_LEAD = 5  # ours: ask for link probes 5 requests before a window ends
MISS_COOLDOWN = 5  # ours: a miss forces a switch only after 5 requests under the plan in use
TIER_RANK = {"end": 0, "edge": 1, "cloud": 2}

Phase = Literal["baseline", "probe", "window"]
Sigma = tuple[float, float, float]


@dataclass(frozen=True)
class ProbeRuns:
    """Sums over the probe runs, for the normalisers n."""

    runs: int = 0
    latency_s: float = 0.0
    with_energy: int = 0
    edge_j: float = 0.0
    total_j: float = 0.0


@dataclass(frozen=True, eq=False)
class ReapState:
    model: ChainModel
    runnable: np.ndarray  # (N+1, N+1): splits the cluster's links can run
    probe_splits: tuple[Split, ...]
    sigma: Sigma
    phase: Phase = "baseline"
    probe_split: int = 0  # which of `probe_splits` runs (phase "probe")
    count: int = 0  # requests of this phase (or window) sent after it began
    phase_start_s: float = -math.inf
    switched_at_s: float = -math.inf  # when the plan in use was chosen
    since_switch: int = 0  # requests completed that were sent under the plan in use
    stage_s: Sigma = (0.0, 0.0, 0.0)  # measured compute seconds per device since the last refit ...
    stage_w: Sigma = (0.0, 0.0, 0.0)  # ... and the sum of W_d over the nodes they ran
    probe_runs: ProbeRuns = field(default_factory=ProbeRuns)
    norms: Sigma = (1.0, 1.0, 1.0)  # n_edge, n_total, n_lat
    asked_probes: bool = False


def chain_devices(cluster: Cluster) -> tuple[str, str, str]:
    """(origin, fog, cloud) of a three-device chain; raises UserInputError naming what is not a chain."""
    origins = [d.name for d in cluster.devices if d.origin]
    problem = (f"it has {len(cluster.devices)} devices" if len(cluster.devices) != 3
               else f"it has {len(origins)} origins" if len(origins) != 1 else "")
    orders: list[tuple[str, str, str]] = []
    if not problem:
        origin = origins[0]
        a, b = (d.name for d in cluster.devices if not d.origin)
        orders = [(origin, x, y) for x, y in ((a, b), (b, a)) if cluster.link(origin, x) and cluster.link(x, y)]
        if not orders:
            problem = f"no links {origin} -> X -> Y join its origin to both servers in a line"
    if problem:
        raise UserInputError(
            f"the reap policy follows Deng et al.'s edge -> fog -> cloud chain: it needs exactly 3 devices, one "
            f"of them the origin, linked origin -> fog -> cloud; cluster {cluster.name!r} is not one ({problem}). "
            f"Use the partial policy (adjusts the cuts on any cluster) or resolve (re-solves with any solver)")
    # a full mesh qualifies both ways round: the fog is the server of the lower tier
    return min(orders, key=lambda o: TIER_RANK[cluster.device(o[1]).tier] > TIER_RANK[cluster.device(o[2]).tier])


@dataclass(frozen=True)
class ReapPolicy:
    """REAP with the paper's defaults; every schedule number and the score weights are options."""

    name: ClassVar[str] = "reap"
    baseline_runs: int = BASELINE_RUNS
    probe_runs: int = PROBE_RUNS
    window_runs: int = WINDOW_RUNS
    hysteresis: float = HYSTERESIS
    weights: tuple[float, float, float] = SCORE_WEIGHTS

    def __post_init__(self) -> None:
        for option in ("baseline_runs", "probe_runs", "window_runs"):
            check_count(option, getattr(self, option))
        check_fraction("hysteresis", self.hysteresis)
        if len(self.weights) != 3 or min(self.weights) < 0:
            raise UserInputError(f"weights must be three non-negative numbers (edge energy, total energy, "
                                 f"latency), got {self.weights}")

    def initial_state(self, view: View) -> ReapState:
        problem = view.base_problem
        model = ChainModel.build(problem, chain_devices(problem.cluster))
        runnable = model.runnable(problem.cluster)
        return ReapState(model, runnable, probe_splits(model.n, runnable), model.profile_sigma)

    def decide(self, view: View, state: ReapState) -> Decision:
        probes: tuple[LinkId, ...] = ()
        if not state.asked_probes:
            probes, state = _chain_links(view, state), replace(state, asked_probes=True)
        record = view.record
        if record is None:
            return Decision(None, state, "", probes)
        state = _absorb(state, record)
        fresh = record.sent_s >= state.phase_start_s
        if state.phase == "baseline":
            if state.count + fresh < self.baseline_runs:
                return Decision(None, replace(state, count=state.count + fresh), "", probes)
            return self._start_probe(view, state, 0, probes)
        if state.phase == "probe":
            return self._probe(view, state, record, fresh, probes)
        return self._window(view, state, record, fresh, probes)

    # -- the schedule ----------------------------------------------------------------------------

    def _start_probe(self, view: View, state: ReapState, k: int, probes: tuple[LinkId, ...]) -> Decision:
        split = state.probe_splits[k]
        state = replace(state, phase="probe", probe_split=k, count=0, phase_start_s=view.now_s)
        reason = f"reap: probe split {k + 1}/{len(state.probe_splits)} {split}"
        return _go(view, state, with_codecs(state.model.plan(split), view), reason, probes)

    def _probe(self, view: View, state: ReapState, record: RequestRecord, fresh: bool,
               probes: tuple[LinkId, ...]) -> Decision:
        if fresh:
            state = replace(state, count=state.count + 1, probe_runs=_add_run(state.probe_runs, record, view))
        if state.count < self.probe_runs:
            return Decision(None, state, "", probes)
        if state.probe_split + 1 < len(state.probe_splits):
            return self._start_probe(view, state, state.probe_split + 1, probes)
        state = replace(state, phase="window", count=0, phase_start_s=view.now_s, norms=_norms(state, view))
        n_edge, n_total, n_lat = state.norms
        reason = (f"reap: probes done (n_edge {n_edge:.3g} J, n_total {n_total:.3g} J, n_lat {n_lat * 1e3:.3g} ms); "
                  f"back to the static split")
        return _go(view, state, view.static, reason, probes)

    def _window(self, view: View, state: ReapState, record: RequestRecord, fresh: bool,
                probes: tuple[LinkId, ...]) -> Decision:
        state = replace(state, count=state.count + fresh,
                        since_switch=state.since_switch + (record.sent_s >= state.switched_at_s))
        if state.count == max(1, self.window_runs - PROBE_LEAD):
            probes = (*probes, *_chain_links(view, state))
        if deadline_missed(view, state.switched_at_s) and state.since_switch >= MISS_COOLDOWN:
            return self._search(view, state, probes, forced=True)
        if state.count >= self.window_runs:
            return self._search(view, replace(state, count=0, phase_start_s=view.now_s), probes, forced=False)
        return Decision(None, state, "", probes)

    # -- step 4: the search ----------------------------------------------------------------------

    def _search(self, view: View, state: ReapState, probes: tuple[LinkId, ...], *, forced: bool) -> Decision:
        state = replace(state, sigma=_refit(state), stage_s=(0.0, 0.0, 0.0), stage_w=(0.0, 0.0, 0.0))
        model, deadline_s = state.model, view.base_problem.constraints.deadline_s
        est = model.estimate(state.sigma, view.problem)
        score = np.where(state.runnable & np.isfinite(est.latency_s), self._score(est, state.norms), math.inf)
        static_score, static_latency = self._score_of(view.static, state, view, score, est)
        current = model.split_of(view.current)
        current_score, _ = self._score_of(view.current, state, view, score, est)
        ok = np.isfinite(score)
        if deadline_s is not None:
            ok &= est.latency_s <= deadline_s
        if math.isfinite(static_score) and (deadline_s is None or static_latency <= deadline_s):
            ok &= score <= static_score
        if forced and current is not None:
            ok[current] = False
        why = "deadline missed" if forced else "window end"
        if not ok.any():
            if same_placement(view.current, view.static):
                return Decision(None, state, f"reap: {why}; no better split than the static one: keep it", probes)
            return _go(view, state, view.static, f"reap: {why}; no candidate: fall back to the static split", probes)
        flat = int(np.argmin(np.where(ok, score, math.inf)))
        best = (flat // score.shape[1], flat % score.shape[1])
        gain = describe(float(score[best]), current_score)
        if best == current:
            return Decision(None, state, f"reap: {why}; the split in use {best} is still the best", probes)
        in_use_ok = current is not None and bool(ok[current])
        if not forced and in_use_ok and not improves(float(score[best]), current_score, self.hysteresis):
            return Decision(None, state, f"reap: {why}; best {best} scores {gain}: under the hysteresis, keep",
                            probes)
        if best == model.split_of(view.static):
            return _go(view, state, view.static, f"reap: {why}; fall back to the static split {best}, score {gain}",
                       probes)
        return _go(view, state, with_codecs(model.plan(best), view), f"reap: {why}; switch to {best}, score {gain}",
                   probes)

    def _score(self, est: Estimate, norms: Sigma) -> np.ndarray:
        w, n = self.weights, norms
        with np.errstate(invalid="ignore"):
            score: np.ndarray = (w[0] * est.edge_energy_j / n[0] + w[1] * est.total_energy_j / n[1]
                                 + w[2] * est.latency_s / n[2])
        return score

    def _score_of(self, plan: Plan, state: ReapState, view: View, score: np.ndarray,
                  est: Estimate) -> tuple[float, float]:
        """(score, predicted latency) of any plan: a split's from the grid, another's by evaluate."""
        split = state.model.split_of(plan)
        if split is not None:
            return float(score[split]), float(est.latency_s[split])
        one = state.model.estimate_plan(plan, state.sigma, view.problem)
        value = float(self._score(one, state.norms))
        return (value if math.isfinite(value) else math.inf), float(one.latency_s)


# -- pure helpers over the state --------------------------------------------------------------------


def _go(view: View, state: ReapState, plan: Plan, reason: str, probes: tuple[LinkId, ...]) -> Decision:
    """Switch to `plan` (keep, if it is the plan in use)."""
    if same_placement(plan, view.current):
        return Decision(None, state, reason, probes)
    return Decision(plan, replace(state, switched_at_s=view.now_s, since_switch=0), reason, probes)


def _chain_links(view: View, state: ReapState) -> tuple[LinkId, ...]:
    chain = set(state.model.devices)
    return tuple((lk.source, lk.target) for lk in view.base_problem.cluster.links
                 if lk.source in chain and lk.target in chain)


def _absorb(state: ReapState, record: RequestRecord) -> ReapState:
    """Add the record's stage times, and the W_d of the nodes they ran, for the next sigma refit."""
    if not record.stages:
        return state
    model = state.model
    seconds, weights = list(state.stage_s), list(state.stage_w)
    index = model.graph.index
    for stage in record.stages:
        if stage.device not in model.weight or not math.isfinite(stage.seconds):
            continue
        k = model.devices.index(stage.device)
        w = model.weight[stage.device]
        seconds[k] += stage.seconds
        weights[k] += float(sum(w[index[n]] for n in stage.node_ids if n in index))
    return replace(state, stage_s=(seconds[0], seconds[1], seconds[2]), stage_w=(weights[0], weights[1], weights[2]))


def _refit(state: ReapState) -> Sigma:
    """sigma_d = measured seconds / sum of W_d over what ran (the paper's t = sigma sum W); kept if idle."""
    s = [state.stage_s[k] / state.stage_w[k] if state.stage_w[k] > 0 else state.sigma[k] for k in range(3)]
    return s[0], s[1], s[2]


def _add_run(runs: ProbeRuns, record: RequestRecord, view: View) -> ProbeRuns:
    if record.latency_s is None:
        return runs
    runs = replace(runs, runs=runs.runs + 1, latency_s=runs.latency_s + record.latency_s)
    if record.energy_by_device_j:
        runs = replace(runs, with_energy=runs.with_energy + 1, total_j=runs.total_j + record.energy_j,
                       edge_j=runs.edge_j + record.energy_by_device_j.get(view.base_problem.origin, 0.0))
    return runs


def _norms(state: ReapState, view: View) -> Sigma:
    """n_edge, n_total, n_lat: measured means over the probe runs, else the model's for the probe splits."""
    est = state.model.estimate(_refit(state), view.problem)
    at = np.array(state.probe_splits)

    def predicted(values: np.ndarray) -> float:
        return float(np.mean(values[at[:, 0], at[:, 1]]))

    runs = state.probe_runs
    lat = runs.latency_s / runs.runs if runs.runs else predicted(est.latency_s)
    edge = runs.edge_j / runs.with_energy if runs.with_energy else predicted(est.edge_energy_j)
    total = runs.total_j / runs.with_energy if runs.with_energy else predicted(est.total_energy_j)
    return _positive(edge), _positive(total), _positive(lat)


def _positive(value: float) -> float:
    """A normaliser must be a positive finite number; 1 (no scaling) otherwise."""
    return value if value > 0 and math.isfinite(value) else 1.0


def probe_splits(n: int, runnable: np.ndarray) -> tuple[Split, ...]:
    """(kN/5, (k+1)N/5) for k = 1..PROBE_SPLITS, each moved to the nearest runnable split."""
    grid_i, grid_j = np.indices(runnable.shape)
    splits = []
    for k in range(1, PROBE_SPLITS + 1):
        a, b = round(k * n / 5), round((k + 1) * n / 5)
        distance = np.where(runnable, np.abs(grid_i - a) + np.abs(grid_j - b), np.iinfo(np.int64).max)
        flat = int(np.argmin(distance))
        splits.append((flat // runnable.shape[1], flat % runnable.shape[1]))
    return tuple(splits)
