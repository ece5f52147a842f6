"""Plans and their costs as JSON blocks and as plain-text tables (what the CLI prints)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coinfer.cost.breakdown import Breakdown
from coinfer.cost.tiled_stage import TiledStageCost
from coinfer.plan import Plan
from coinfer.problem import Problem


def predicted_block(b: Breakdown) -> dict[str, Any]:
    """The `predicted` block of `coinfer plan --json` and `coinfer cost --json`."""
    return {
        "latency_s": b.latency_s, "compute_s": b.compute_s, "transfer_s": b.transfer_s,
        "queueing_s": b.queueing_s, "energy_j": b.energy_j, "origin_energy_j": b.origin_energy_j,
        "energy_by_device_j": dict(b.energy_by_device_j), "cost_usd": b.cost_usd,
        "reliability": b.reliability, "throughput_rps": b.throughput_rps, "bottleneck": b.bottleneck,
        "cut_bytes": b.cut_bytes, "wire_bytes": b.wire_bytes, "memory_by_device_bytes": dict(b.memory_by_device_bytes),
        "objective": b.objective_value, "feasible": b.feasible,
        "violations": [{"kind": v.kind, "subject": v.subject, "value": v.value, "limit": v.limit,
                        "message": v.message} for v in b.violations],
        **({"tiled_stages": [tiled_stage_block(c) for c in b.tiled_stages]} if b.tiled_stages else {}),
    }


def tiled_stage_block(c: TiledStageCost) -> dict[str, Any]:
    """One tiled stage's predicted figures, for the JSON of plan, cost and compare."""
    return {
        "mode": c.mode, "scatter": c.scatter, "gather": c.gather, "latency_s": c.latency_s,
        "critical_compute_s": c.critical_compute_s, "redundancy": c.redundancy, "scatter_bytes": c.scatter_bytes,
        "gather_bytes": c.gather_bytes, "halo_bytes": c.halo_bytes, "messages": c.messages,
        "tiles": [{"device": t.device, "rows": [t.tile.rows.start, t.tile.rows.stop],
                   "cols": [t.tile.cols.start, t.tile.cols.stop], "compute_s": t.compute_s,
                   "output_ready_s": t.output_ready_s} for t in c.tiles],
        "devices": {d: {"tiles": list(x.tiles), "compute_s": x.compute_s, "memory_bytes": x.memory_bytes,
                        "energy_j": x.energy_j} for d, x in c.devices.items()},
    }


def tiled_lines(plan: Plan, b: Breakdown) -> list[str]:
    """One paragraph per tiled stage: grid, mode, devices, timing, traffic and memory."""
    lines = []
    for tiling, c in zip(plan.tilings, b.tiled_stages, strict=True):
        per_device = ", ".join(f"{d} {len(x.tiles)} tile(s) {x.compute_s * 1e3:.1f} ms {x.memory_bytes / 2**20:.1f} MiB"
                               for d, x in c.devices.items() if x.tiles)
        lines += [f"tiled      {tiling.first} .. {tiling.last}: {tiling.tile_rows}x{tiling.tile_cols} {c.mode}, "
                  f"scatter {c.scatter} -> gather {c.gather}: {c.latency_s * 1e3:.2f} ms (busiest device computes "
                  f"{c.critical_compute_s * 1e3:.2f} ms), redundancy {c.redundancy:.2f}, {c.messages} messages, "
                  f"{c.moved_bytes / 1e6:.3f} MB moved (halos {c.halo_bytes / 1e6:.3f} MB)",
                  f"           {per_device}"]
    return lines


def stages_block(b: Breakdown) -> list[dict[str, Any]]:
    return [{"device": s.device, "first": s.first, "last": s.last, "nodes": s.node_count, "flops": s.flops,
             "compute_s": s.compute_s, "queueing_s": s.queueing_s, "sent_bytes": s.sent_bytes,
             "transfer_s": s.transfer_s} for s in b.stages]


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        parts = [c.rjust(w) if numeric[i] and k else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plan_report(plan: Plan, problem: Problem, b: Breakdown) -> str:
    """The stage table, the totals and any violated constraint."""
    input_hops = [t for t in b.transfers if t.tensor in problem.graph.input_names]
    result_hops = [t for t in b.transfers if t.is_result]
    rows: list[list[object]] = []
    for t in input_hops:
        rows.append(["in", t.source, "", f"model input -> {t.target}", "", "", "", t.wire_bytes / 1e6, t.time_s * 1e3])
    for k, (stage, s) in enumerate(zip(plan.stages, b.stages, strict=True), 1):
        members = set(stage.node_ids)
        sends = [t for t in b.transfers if t.tensor in members and not t.is_result]
        span = s.first if s.first == s.last else f"{s.first} .. {s.last}"
        if stage.tiling:
            span += f" (tiled on {','.join(stage.tiling.tile_devices)})"
        rows.append([k, s.device, s.node_count, span, s.flops / 1e9, s.compute_s * 1e3, s.queueing_s * 1e3,
                     sum(t.wire_bytes for t in sends) / 1e6, sum(t.time_s for t in sends) * 1e3])
    for t in result_hops:
        rows.append(["out", t.source, "", f"result -> {t.target}", "", "", "", t.wire_bytes / 1e6, t.time_s * 1e3])
    # Without codecs the bytes on the wire are the raw bytes; with them the column says so.
    head = ["#", "device", "nodes", "nodes (topological order)", "GFLOP", "compute ms", "queue ms",
            "wire MB" if plan.codecs else "sends MB", "transfer ms"]
    lines = [f"plan       {plan}", f"solver     {plan.solver}    objective {problem.objective}"]
    if plan.codecs:
        lines.append("codecs     " + ", ".join(f"{s}->{t} {c}" for (s, t), c in plan.codecs.items()))
    lines += ["", table(head, rows), "", totals_line(b), *tiled_lines(plan, b)]
    if plan.codecs:
        codec_s = sum(t.codec_s for t in b.transfers)
        lines.append(f"on wire    {b.wire_bytes / 1e6:.3f} MB of {b.cut_bytes / 1e6:.3f} MB raw "
                     f"(codecs' encode + decode {codec_s * 1e3:.2f} ms, in transfer)")
    for v in b.violations:
        lines.append(f"INFEASIBLE {v.kind}: {v.message}")
    return "\n".join(lines)


def totals_line(b: Breakdown) -> str:
    return (f"predicted  latency {b.latency_s * 1e3:.2f} ms (compute {b.compute_s * 1e3:.2f} + transfer "
            f"{b.transfer_s * 1e3:.2f} + queueing {b.queueing_s * 1e3:.2f}) | energy {b.energy_j:.3g} J "
            f"(origin {b.origin_energy_j:.3g} J) | cost ${b.cost_usd:.3g} | reliability {b.reliability:.6g} | "
            f"throughput {b.throughput_rps:.3g}/s (bottleneck {b.bottleneck})")


def time_sources_line(problem: Problem) -> str:
    """Where each device's node times come from: measured, fitted to published figures, or uncalibrated."""
    return "node times: " + "; ".join(f"{d}: {s}" for d, s in problem.time_sources.items())


def comparison_table(entries: Sequence[tuple[str, Plan, Breakdown]]) -> str:
    """One row per plan: the metrics side by side, with the speed-up over the first row."""
    base = entries[0][2].latency_s if entries else 0.0
    rows = [[name, str(plan) if len(str(plan)) <= 48 else str(plan)[:45] + "...", b.latency_s * 1e3,
             base / b.latency_s if b.latency_s else 0.0, b.energy_j, b.origin_energy_j, b.cost_usd, b.reliability,
             b.throughput_rps, "yes" if b.feasible else "NO"]
            for name, plan, b in entries]
    head = ["plan", "placement", "latency ms", "speed-up", "energy J", "origin J", "cost $", "reliability",
            "throughput/s", "feasible"]
    return table(head, rows)


def _cell(v: object) -> str:
    if isinstance(v, float):
        if v == float("inf"):
            return "inf"
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.1f}"
        if abs(v) >= 0.01:
            return f"{v:.3f}"
        return f"{v:.3g}"
    return str(v)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) or v == ""
