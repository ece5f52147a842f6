"""Figures for papers: Neurosurgeon's per-cut latency bars, the Pareto front, the adaptation timeline.

matplotlib is an optional extra (`pip install 'coinfer[plot]'`); it is imported only here, with
the non-interactive Agg backend so that figures render on machines without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coinfer.cost import Breakdown, evaluate
from coinfer.errors import MissingDependencyError, UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem


def cut_candidates(problem: Problem, server: str | None = None) -> list[tuple[int, Plan, Breakdown]]:
    """Every single cut of the topological order between the origin and one server:
    nodes [0, j) on the origin and [j, N) on the server, for j = 0..N."""
    target = _server(problem, server)
    ids = [n.id for n in problem.graph.nodes]
    out = []
    for j in range(len(ids) + 1):
        placement = {nid: problem.origin if k < j else target for k, nid in enumerate(ids)}
        plan = Plan(problem.graph, placement, "cut")
        out.append((j, plan, evaluate(plan, problem)))
    return out


def _server(problem: Problem, server: str | None) -> str:
    """`server`, checked, or the cluster's first server."""
    servers = [d.name for d in problem.cluster.servers]
    if not servers:
        raise UserInputError("the cut figure needs a server besides the origin")
    if server is not None and server not in servers:
        raise UserInputError(f"{server!r} is not a server of this cluster; servers: {', '.join(servers)}")
    return server or servers[0]


def plot_cut_latencies(problem: Problem, path: str | Path, *, server: str | None = None,
                       chosen: Plan | None = None) -> Path:
    """Predicted latency of every candidate cut, origin compute / transfer / server compute
    stacked (the figure of Kang et al., ASPLOS 2017); the chosen plan's cut, if any, is marked."""
    plt = _pyplot()
    target = _server(problem, server)
    rows = cut_candidates(problem, target)
    origin = problem.origin
    ms = 1e3
    own = [sum(s.compute_s + s.queueing_s for s in b.stages if s.device == origin) * ms for _, _, b in rows]
    sent = [b.transfer_s * ms for _, _, b in rows]
    away = [sum(s.compute_s + s.queueing_s for s in b.stages if s.device != origin) * ms for _, _, b in rows]
    xs = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(rows)), 3.6))
    ax.bar(xs, own, label=f"compute on {origin}", color="#4c72b0")
    ax.bar(xs, sent, bottom=own, label="transfer", color="#dd8452")
    ax.bar(xs, away, bottom=[a + b for a, b in zip(own, sent, strict=True)],
           label=f"compute on {target}", color="#55a868")
    best = min(range(len(rows)), key=lambda k: rows[k][2].latency_s)
    ax.annotate("best", (best, rows[best][2].latency_s * ms), ha="center", va="bottom", fontsize=8)
    if chosen is not None:
        for k, (_, plan, _) in enumerate(rows):
            if plan.placement == chosen.placement:
                ax.axvline(k, color="black", linestyle=":", linewidth=1)
    names = ["input", *(n.id for n in problem.graph.nodes)]
    step = max(1, len(names) // 24)
    ax.set_xticks(xs[::step], [names[k] for k in xs[::step]], rotation=90, fontsize=6)
    ax.set_xlabel("cut after node (everything up to it runs on the origin)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{problem.graph.name} on {problem.cluster.name}: latency of each cut")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_front(entries: Sequence[tuple[str, Breakdown]], path: str | Path, *, x: str = "latency_s",
               y: str = "energy_j") -> Path:
    """Plans as points on two metrics (default latency against energy), labelled by name."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for name, b in entries:
        ax.scatter(b.metric(x), b.metric(y), s=18)
        ax.annotate(name, (b.metric(x), b.metric(y)), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title("non-dominated plans")
    return _save(fig, path)


def plot_adapt_timeline(timelines: dict[str, dict[str, Any]], path: str | Path, *,
                        deadline_s: float | None = None) -> Path:
    """Three panels over the serving time, one line per policy: the traced links' bandwidth, the
    bytes the plan in use sends between devices per request (the cut), and each request's latency
    with the deadline. `timelines` maps a policy to `sent_s`, `latency_s`, `cut_bytes` and
    `bandwidth_bits_per_s` (link -> one value per request), and optionally `trace_steps` (link ->
    `time_s`, `bits_per_s` at each change of the trace) and `health` (the runtime's verdicts: a
    device down or back, marked on every panel), as `coinfer adapt` reports them."""
    plt = _pyplot()
    fig, (bw_ax, cut_ax, lat_ax) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    drawn_links: set[str] = set()
    for policy, t in timelines.items():
        # the trace at its own changes when given, else its value as each request left
        steps = t.get("trace_steps") or {link: {"time_s": t["sent_s"], "bits_per_s": values}
                                         for link, values in t["bandwidth_bits_per_s"].items()}
        for link, series in steps.items():
            if link not in drawn_links:  # the same trace under every policy: draw it once
                bw_ax.step(series["time_s"], [v / 1e6 for v in series["bits_per_s"]], where="post", label=link)
                drawn_links.add(link)
        cut_ax.step(t["sent_s"], [(b or 0) / 1e6 for b in t["cut_bytes"]], where="post", label=policy)
        lat_ax.plot(t["sent_s"], [(v or 0) * 1e3 for v in t["latency_s"]], ".", markersize=3, label=policy)
    if deadline_s is not None:
        lat_ax.axhline(deadline_s * 1e3, color="red", linestyle="--", linewidth=1, label="deadline")
    _mark_health(timelines, (bw_ax, cut_ax, lat_ax))
    cut_ax.set_ylim(bottom=0)  # a switch to a cut of a few kB must look like one
    bw_ax.set_ylabel("bandwidth (Mbit/s)")
    cut_ax.set_ylabel("cut (MB / request)")
    lat_ax.set_ylabel("latency (ms)")
    lat_ax.set_xlabel("time since serving started (s)")
    for ax in (bw_ax, cut_ax, lat_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def _mark_health(timelines: dict[str, dict[str, Any]], axes: Sequence[Any]) -> None:
    """A vertical line on every panel where a device was declared down (red) and where one came
    back (green), from the timelines' `health` entries; each device and state is labelled once."""
    labelled: set[str] = set()
    for t in timelines.values():
        for h in t.get("health") or ():
            if h["state"] == "degraded":
                continue
            lost = h["state"] == "down"
            label = f"{h['device']} {'down' if lost else 'back'}"
            for k, ax in enumerate(axes):
                ax.axvline(h["at_s"], color="red" if lost else "green", linestyle="--" if lost else ":",
                           linewidth=1, label=label if k == len(axes) - 1 and label not in labelled else None)
            labelled.add(label)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("plots need matplotlib: pip install 'coinfer[plot]'") from None
    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
