"""The adaptation timeline as a figure: bandwidth, the cut in use, and per-request latency.

Three panels sharing the time axis, one colour per result (policy) when several are given:
the bandwidth of every traced link (drawn from the longest run: the runs compared share their
traces), the cut in use (for each server, one line style each, the topological position of the
first node the plan new requests were given puts there; the node count when it puts none), and
every request's latency at its completion with the deadline as a dashed line. matplotlib is optional
and imported lazily, as in coinfer.plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from coinfer.plots import _pyplot, _save
from coinfer.sim.result import SimResult


def plot_timeline(results: SimResult | Sequence[SimResult], path: str | Path, *, title: str | None = None) -> Path:
    """Write the three-panel timeline of one run or of several runs over the same traces."""
    runs = [results] if isinstance(results, SimResult) else list(results)
    plt = _pyplot()
    fig, (bw_ax, cut_ax, lat_ax) = plt.subplots(3, 1, figsize=(8.0, 7.0), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("-", "--", ":", "-.")
    longest = max(runs, key=lambda r: r.duration_s)
    for link, series in longest.timeline.bandwidth_bits_per_s.items():
        bw_ax.step(longest.timeline.grid_s, [b / 1e6 for b in series], where="post", label=link, linewidth=1)
    for k, run in enumerate(runs):
        colour = colours[k % len(colours)]
        t = run.timeline
        for m, (device, by_version) in enumerate(t.first_position.items()):
            cut_ax.step(t.grid_s, [by_version[v] for v in t.version_at_grid], where="post", color=colour,
                        linestyle=styles[m % len(styles)], linewidth=1.2, label=f"{run.label}: {device}")
        lat_ax.plot(t.request_end_s, [x * 1e3 for x in t.request_latency_s], ".", markersize=2, color=colour,
                    label=run.label)
    latencies = [x for r in runs for x in r.timeline.request_latency_s if x > 0]
    if latencies and max(latencies) > 50 * min(latencies):  # a policy far off the deadline would flatten the rest
        lat_ax.set_yscale("log")
    deadline = next((r.deadline_s for r in runs if r.deadline_s is not None), None)
    if deadline is not None:
        lat_ax.axhline(deadline * 1e3, color="black", linestyle="--", linewidth=1, label="deadline")
    bw_ax.set_ylabel("bandwidth (Mbit/s)")
    cut_ax.set_ylabel("first node on (position)")
    lat_ax.set_ylabel("latency (ms)")
    lat_ax.set_xlabel("simulated time (s)")
    for ax in (bw_ax, cut_ax, lat_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
    bw_ax.set_title(title or "adaptation timeline")
    return _save(fig, path)
