"""Plan JSON documents (format version 1): a placement with the problem it was made for.

A plan file is self-contained so that `coinfer cost plan.json` (and later the runtime) needs
nothing else: it embeds the graph, the cluster, the node times per device (and where they came
from), the objective and the constraints. `placement` is the part meant for hand-editing; `plan`
repeats it in the one-line form and `predicted` is informative (recomputed on load). `codecs`
(optional) maps directed links, written `"source->target"`, to codec text such as `"fp16+lz4"`.
`standbys` (optional) maps a node id to its standby devices in failover order (replicas; the
one-line form writes them `first..last@primary+standby`). `tilings` (optional) lists the tiled
stages (coinfer.plan_tiling), each `{"first", "last", "grid": [rows, cols], "mode", "devices",
"gather"}` with optional `"row_sizes"` / `"col_sizes"`; the placement puts a tiled stage's nodes
on its gather device. `stage_starts` (optional) lists nodes that begin a stage although the node
before them runs on the same device (written by the runtime's lowering of tiled stages).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from coinfer.cluster import Cluster
from coinfer.codec_model import Codec, parse_codec
from coinfer.cost.breakdown import Breakdown
from coinfer.errors import CodecError, ObjectiveError, PlanError
from coinfer.files.cluster_file import cluster_from_dict, cluster_to_dict
from coinfer.files.graph_file import graph_from_dict, graph_to_dict
from coinfer.files.validation import check_version, read_json, validate
from coinfer.plan import Plan
from coinfer.plan_tiling import Tiling
from coinfer.problem import Constraints, Objective, Problem, parse_objective

PLAN_FORMAT_VERSION = 1


class ConstraintsDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deadline_s: float | None = None
    origin_energy_budget_j: float | None = None
    request_rate_per_s: float | None = None
    min_reliability: float | None = None


class TilingDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first: str
    last: str
    grid: tuple[int, int]
    mode: Literal["fused", "halo"] = "fused"
    devices: list[str]
    gather: str
    row_sizes: list[int] | None = None
    col_sizes: list[int] | None = None


class PlanDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1]
    plan: str = ""
    solver: str = "placement"
    placement: dict[str, str]
    standbys: dict[str, list[str]] = {}
    codecs: dict[str, str] = {}
    tilings: list[TilingDoc] = []
    stage_starts: list[str] = []
    objective: str = "latency"
    constraints: ConstraintsDoc = ConstraintsDoc()
    predicted: dict[str, Any] = {}
    solve_time_s: float | None = None
    time_sources: dict[str, str] = {}
    node_time_s: dict[str, dict[str, float]]
    graph: dict[str, Any]
    cluster: dict[str, Any]


def plan_to_dict(plan: Plan, problem: Problem, breakdown: Breakdown | None = None,
                 solve_time_s: float | None = None) -> dict[str, Any]:
    from coinfer.report import predicted_block

    c = problem.constraints
    doc: dict[str, Any] = {
        "version": PLAN_FORMAT_VERSION,
        "plan": str(plan),
        "solver": plan.solver,
        "placement": {n.id: plan.placement[n.id] for n in problem.graph.nodes},
        **({"standbys": {n: list(s) for n, s in plan.standbys.items() if s}} if plan.has_standbys else {}),
        **({"codecs": {f"{s}->{t}": str(c) for (s, t), c in plan.codecs.items()}} if plan.codecs else {}),
        **({"tilings": [_tiling_to_dict(t) for t in plan.tilings]} if plan.tilings else {}),
        **({"stage_starts": sorted(plan.stage_starts)} if plan.stage_starts else {}),
        "objective": str(problem.objective),
        "constraints": {"deadline_s": c.deadline_s, "origin_energy_budget_j": c.origin_energy_budget_j,
                        "request_rate_per_s": c.request_rate_per_s, "min_reliability": c.min_reliability},
    }
    if breakdown is not None:
        doc["predicted"] = predicted_block(breakdown)
    if solve_time_s is not None:
        doc["solve_time_s"] = solve_time_s
    doc.update(time_sources=dict(problem.time_sources),
               node_time_s={d: dict(t) for d, t in problem.node_time_s.items()},
               graph=graph_to_dict(problem.graph), cluster=cluster_to_dict(problem.cluster))
    return doc


def plan_from_dict(doc: Any, where: str | Path = "<plan>") -> tuple[Plan, Problem]:
    check_version(doc, PLAN_FORMAT_VERSION, where, PlanError, "make the plan again")
    parsed = validate(PlanDoc, doc, where, PlanError)
    graph = graph_from_dict(parsed.graph, f"{where}: graph")
    cluster = cluster_from_dict(parsed.cluster, f"{where}: cluster")
    unknown = sorted({d for d in parsed.placement.values() if d not in cluster.device_names})
    if unknown:
        raise PlanError(f"{where}: placement names unknown device(s) {unknown}; devices: "
                        f"{', '.join(cluster.device_names)}")
    unknown = sorted({d for s in parsed.standbys.values() for d in s if d not in cluster.device_names})
    if unknown:
        raise PlanError(f"{where}: field 'standbys' names device(s) {unknown}, which are not in the cluster; "
                        f"devices: {', '.join(cluster.device_names)}")
    unknown = sorted({d for t in parsed.tilings for d in (*t.devices, t.gather) if d not in cluster.device_names})
    if unknown:
        raise PlanError(f"{where}: field 'tilings' names device(s) {unknown}, which are not in the cluster; "
                        f"devices: {', '.join(cluster.device_names)}")
    codecs = link_codecs(parsed.codecs, cluster, f"{where}: field 'codecs'")
    c = parsed.constraints
    try:
        limits = Constraints(c.deadline_s, c.origin_energy_budget_j, c.request_rate_per_s, c.min_reliability)
    except ObjectiveError as exc:
        raise PlanError(f"{where}: field 'constraints': {exc}") from None
    problem = Problem(graph, cluster, parsed.node_time_s, parse_objective(parsed.objective) if parsed.objective
                      else Objective(), limits, parsed.time_sources)
    try:
        tilings = tuple(Tiling(t.first, t.last, tuple(t.devices), t.gather, t.grid[0], t.grid[1], t.mode,
                               tuple(t.row_sizes) if t.row_sizes else None,
                               tuple(t.col_sizes) if t.col_sizes else None) for t in parsed.tilings)
        plan = Plan(graph, parsed.placement, parsed.solver, codecs=codecs,
                    standbys={n: tuple(s) for n, s in parsed.standbys.items() if s}, tilings=tilings,
                    stage_starts=frozenset(parsed.stage_starts))
    except PlanError as exc:
        raise PlanError(f"{where}: {exc}") from None
    return plan, problem


def _tiling_to_dict(t: Tiling) -> dict[str, Any]:
    return {"first": t.first, "last": t.last, "grid": [t.tile_rows, t.tile_cols], "mode": t.mode,
            "devices": list(t.devices), "gather": t.gather,
            **({"row_sizes": list(t.row_sizes)} if t.row_sizes else {}),
            **({"col_sizes": list(t.col_sizes)} if t.col_sizes else {})}


def link_codecs(entries: Mapping[str, str], cluster: Cluster, where: str) -> dict[tuple[str, str], Codec]:
    """Codecs keyed by directed link from `{"source->target": "codec text"}` (a plan file's `codecs`,
    or the CLI's `--codec`); `where` names the file and field (or flag) for the error messages."""
    codecs: dict[tuple[str, str], Codec] = {}
    for key, text in entries.items():
        source, arrow, target = (part.strip() for part in key.partition("->"))
        if not arrow or not source or not target:
            raise PlanError(f"{where}: link {key!r} should look like 'source->target', e.g. "
                            f"'{cluster.origin.name}->{(cluster.servers or (cluster.origin,))[0].name}'")
        unknown = [d for d in (source, target) if d not in cluster.device_names]
        if unknown:
            raise PlanError(f"{where}: link {key!r} names unknown device(s) {unknown}; devices: "
                            f"{', '.join(cluster.device_names)}")
        if cluster.link(source, target) is None:
            links = ", ".join(f"{lk.source}->{lk.target}" for lk in cluster.links)
            raise PlanError(f"{where}: cluster {cluster.name!r} has no link {source}->{target}, so it has no codec to "
                            f"set; links: {links or 'none'}")
        try:
            codecs[(source, target)] = parse_codec(text)
        except CodecError as exc:
            raise CodecError(f"{where}: link {key!r}: {exc}") from None
    return codecs


def save_plan(path: str | Path, plan: Plan, problem: Problem, breakdown: Breakdown | None = None,
              solve_time_s: float | None = None) -> None:
    Path(path).write_text(json.dumps(plan_to_dict(plan, problem, breakdown, solve_time_s), indent=1) + "\n")


def load_plan(path: str | Path) -> tuple[Plan, Problem]:
    path = Path(path)
    return plan_from_dict(read_json(path, PlanError, "plan"), path)
