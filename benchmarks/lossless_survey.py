"""Survey: every model coinfer captures, cut inside its DAG and run on three workers, against the unpartitioned model.

For every model of benchmarks/capture_survey.py (every torchvision classifier, full-size hf
gpt2/bert/vit), capture it, cut it into four stages a | b | c | a with each cut moved to where at
least two tensors cross it when the graph has such a place nearby (benchmarks/_cuts.py, the plans of
tests/runtime/test_lossless_models.py), run a few requests on three local worker processes (1 thread
each, links and devices not emulated, codec none) and compare the outputs with the eager model run
at the workers' thread count: bit-identical, else the largest absolute error and that error over the
output's scale (its largest absolute value). A model whose output is all zeros compares nothing
upstream of its last layer (torchvision's ViTs zero their classifier head at random initialisation),
so it is run a second time as `python:lossless_survey:nonzero_NAME`: the same model with its all-zero
weights drawn at random.

Each model runs in its own subprocess with its own three workers (a crash or an out-of-memory kill
ends one row, not the survey; the workers' executors, cached per graph, are freed with them), and
the peak resident memory of that process and its workers is recorded. Models are run smallest
first (parameter bytes), so the largest come last; models whose parameters exceed --max-param-gb
are skipped (every worker rebuilds the whole model, and so does the reference).

    .venv/bin/python benchmarks/lossless_survey.py [--models resnet18,hf:gpt2] [--requests 2] \
        [--skip-larger-than-gflops 100] [--max-param-gb 3] [--timeout-s 1200] [--json out.json]
    .venv/bin/python benchmarks/lossless_survey.py --render out.json[,more.json]   # the table of saved rows
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _cuts import crossing_profile, crossing_values, cut_positions, hopping_plan
from capture_survey import survey_specs

DEVICES = ("a", "b", "c")
# Link and device figures do not matter: nothing is emulated or shaped, the cluster only names the devices.
CLUSTER: dict[str, Any] = {
    "devices": {"a": {"flops_per_s": 1e10, "origin": True}, "b": {"flops_per_s": 1e10}, "c": {"flops_per_s": 1e10}},
    "links": [{"between": [x, y], "bandwidth_bits_per_s": 1e9} for x, y in (("a", "b"), ("b", "c"), ("a", "c"))],
}
# Measured here: peak memory (the model's process and its three workers) is about 3 GB plus 5.5x the
# parameter bytes (vit_h_14: 16.8 GB for 2.53 GB, regnet_y_128gf: 17.1 GB for 2.58 GB; every worker and
# the reference build the whole model), so 3 GB of parameters stays under 20 GB of the machine's 24.
MAX_PARAM_GB = 3.0
SCALE_TOLERANCE = 1e-5  # max abs error / output scale that counts as equal (the lossless test's bound)
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
HERE = Path(__file__).resolve().parent
VARIANT = "nonzero_"  # python:lossless_survey:nonzero_NAME is torchvision's NAME with its all-zero weights random


def nonzero_weights(name: str) -> tuple[Any, tuple[Any, ...]]:
    """torchvision's NAME as `torchvision:NAME` builds it, but every all-zero weight of two or more dimensions
    drawn from N(0, 0.02), seeded.

    torchvision's ViTs zero their classifier head (and class token) at random initialisation, so their
    output is all zeros whatever the layers before it compute: comparing it checks nothing."""
    import torch

    from coinfer.capture.models import build
    from coinfer.capture.spec import parse_spec

    model, inputs = build(parse_spec(f"torchvision:{name}"), None, 0, None, None)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() >= 2 and not weight.any():
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.02)
    return model, inputs


def __getattr__(name: str) -> Any:
    """`nonzero_NAME` for every torchvision NAME (PEP 562: a python: spec names a callable of this module)."""
    if name.startswith(VARIANT):
        return functools.partial(nonzero_weights, name.removeprefix(VARIANT))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- one model, in its own process ----------------------------------------------------------------

def measure(spec: str, requests: int, max_param_gb: float | None, max_gflops: float | None,
            request_timeout_s: float) -> dict[str, Any]:
    """Capture, cut and run one model here; its survey row."""
    from coinfer.api import make_problem
    from coinfer.capture import capture
    from coinfer.files.cluster_file import cluster_from_dict
    from coinfer.runtime.local import LocalWorkers
    from coinfer.runtime.reference import example_inputs
    from coinfer.runtime.run import RunOptions, run_plan

    row: dict[str, Any] = {"spec": spec, "status": "failed", "step": "capture"}
    start = time.perf_counter()
    graph = capture(spec)
    row.update(capture_s=time.perf_counter() - start, nodes=len(graph.nodes), gflops=graph.total_flops / 1e9,
               params_gb=graph.total_param_bytes / 1e9, step="plan")
    if max_param_gb is not None and row["params_gb"] > max_param_gb:
        return {**row, "status": "skipped", "error": f"parameters {row['params_gb']:.2f} GB > --max-param-gb "
                f"{max_param_gb:g}: three workers and the reference each hold a copy"}
    if max_gflops is not None and row["gflops"] > max_gflops:
        return {**row, "status": "skipped", "error": f"{row['gflops']:.1f} GFLOPs > --skip-larger-than-gflops "
                f"{max_gflops:g}"}
    plan = hopping_plan(graph)
    cuts = cut_positions(plan)
    row.update(stages=len(plan.stages), plan=str(plan), cut_crossings=[crossing_values(graph, k) for k in cuts],
               graph_max_crossing=max(crossing_profile(graph)[1:-1]), step="run")
    row["widest_cut"] = max(row["cut_crossings"])
    problem = make_problem(graph, cluster_from_dict(CLUSTER, "lossless-survey.yaml"))
    options = RunOptions(requests=requests, verify=True, emulate=False, shaping="none", timeout_s=request_timeout_s,
                         deploy_timeout_s=request_timeout_s)
    # workers rebuild python:lossless_survey:... variants, so they must import this module
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    # one thread per worker, as in the lossless test; run_plan computes the reference at the same count
    with LocalWorkers(DEVICES, threads=1) as workers:
        try:
            with workers.client(timeout_s=60) as client:
                report = run_plan(plan, problem, client, workers.endpoint, options, example_inputs(graph, seed=1))
        except Exception as exc:
            # a worker killed for memory only shows as a timeout at the client: name it
            raise RuntimeError(f"{exc}{_dead_workers(workers)}") from exc
    row.update(run_s=time.perf_counter() - start, deploy_s=report["deploy_s"], p50_s=report["latency_s"]["p50"],
               ok_requests=report["ok"], requests=report["requests"], bit_identical=report.get("bit_identical"),
               max_abs_err=report.get("max_abs_err"), output_scale=report.get("output_scale"),
               worker_errors=report["errors"][:3])
    scale = row["output_scale"] or 0.0
    row["relative_err"] = row["max_abs_err"] / scale if scale > 0 else (0.0 if row["max_abs_err"] == 0 else None)
    if report["ok"] != report["requests"] or not report.get("verified"):
        row["error"] = f"{report['failed']} of {report['requests']} requests failed: {report['errors'][:1]}"
        return row
    row["status"] = "ok"
    return row


def _dead_workers(workers: Any) -> str:
    dead = [f"worker {d} exited with {p.returncode}" for d, p in workers.processes.items() if p.poll() is not None]
    return f" ({'; '.join(dead)}; -9 is SIGKILL, the kernel's out-of-memory killer)" if dead else ""


def measure_caught(spec: str, *args: Any) -> dict[str, Any]:
    # SIGTERM (the parent's timeout) must unwind through LocalWorkers' exit, which stops the workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    row: dict[str, Any] = {"spec": spec}
    try:
        return measure(spec, *args)
    except Exception as exc:  # the survey reports every failure, whatever its type
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:600])
    return row


# -- the survey: one subprocess per model ------------------------------------------------------------

def param_bytes_hint(spec: str) -> int:
    """About how many parameter bytes a model has, without building it (0 if unknown).

    Only orders the survey, largest last; the skip decision uses the captured graph's own count.
    torchvision: the parameter count its published weights declare, as float32 (building on the meta
    device fails for RegNet, which sizes its layers with tensor arithmetic); hf: the model built on the
    meta device."""
    import torch

    kind, _, name = spec.partition(":")
    try:
        if kind == "torchvision":
            import torchvision

            return 4 * max(w.meta["num_params"] for w in torchvision.models.get_model_weights(name))
        if kind == "hf":
            from coinfer.capture.hf import build_hf

            with torch.device("meta"):
                model, _ = build_hf(name, None, None, 0)
            tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
            return sum(t.numel() * t.element_size() for t in tensors.values())
    except Exception:  # a model without published weights, say: order it as unknown
        return 0
    return 0


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in a process group (the model's process and its workers)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[2]) == pgid:  # fields from the state on: state, ppid, pgrp, ..., rss (24th of stat)
            total += int(fields[21]) * PAGE_BYTES
    return total


def stop_group(proc: subprocess.Popen[str]) -> None:
    """Stop a model's process and any worker it left: the process group of the session it started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + 10.0
        try:
            os.killpg(proc.pid, sig)
            while time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.2)  # reaped, or it would stay in the group as a zombie
                os.killpg(proc.pid, 0)  # raises once nothing is left in the group
        except ProcessLookupError:
            return


def run_isolated(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", spec, "--requests", str(args.requests),
           "--request-timeout-s", str(min(args.timeout_s, 600.0))]
    if args.max_param_gb is not None:
        cmd += ["--max-param-gb", str(args.max_param_gb)]
    if args.skip_larger_than_gflops is not None:
        cmd += ["--skip-larger-than-gflops", str(args.skip_larger_than_gflops)]
    start = time.perf_counter()
    # a session of its own: the model's process and the workers it starts share one process group,
    # which can be stopped as a whole even when the process itself is killed
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    peak, out, err = 0, "", ""
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                peak = max(peak, group_rss_bytes(proc.pid))
                if time.perf_counter() - start > args.timeout_s:
                    stop_group(proc)
                    return {"spec": spec, "status": "failed", "error": f"timed out after {args.timeout_s:.0f} s",
                            "wall_s": time.perf_counter() - start, "peak_rss_gb": peak / 1e9}
    finally:
        stop_group(proc)  # also on Ctrl-C or an error here: no worker outlives the survey
    wall_s = time.perf_counter() - start
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return {"spec": spec, "status": "failed", "error": f"exit {proc.returncode}: {tail}"[:600],
                "wall_s": wall_s, "peak_rss_gb": peak / 1e9}
    row: dict[str, Any] = json.loads(lines[-1])
    row.update(wall_s=wall_s, peak_rss_gb=peak / 1e9)
    return row


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | nodes | stages | widest cut (tensors) | bit-identical | max abs error | error / scale | "
            "wall s | peak GB | note |")
    out = [head, "|" + "---|" * 10]
    for r in rows:
        identical = {True: "yes", False: "NO", None: ""}[r.get("bit_identical")] if r["status"] == "ok" else ""
        widest = ""
        if "widest_cut" in r:
            # a 1 where the graph has wider places elsewhere says the window missed them, not that there are none
            widest = f"{r['widest_cut']}" + ("" if r["widest_cut"] >= 2 else f" (graph max {r['graph_max_crossing']})")
        note = "" if r["status"] == "ok" else f"{r['status']}: {r.get('error', '')}"
        if r["status"] == "ok" and r["output_scale"] == 0:
            note = "output all zeros: nothing upstream compared"
        if "variant_of" in r:
            note = f"{r['variant_of']} with its all-zero weights random; {note}".rstrip("; ")
        note = note.replace("|", "/").replace("\n", " ")
        out.append(f"| {r['spec']} | {r.get('nodes', '')} | {r.get('stages', '')} | {widest} | {identical} | "
                   f"{_num(r.get('max_abs_err'), '.3g')} | {_num(r.get('relative_err'), '.2g')} | "
                   f"{_num(r.get('wall_s'), '.0f')} | {_num(r.get('peak_rss_gb'), '.1f')} | {note} |")
    return "\n".join(out)


def summary(rows: list[dict[str, Any]]) -> str:
    survey = [r for r in rows if "variant_of" not in r]
    variants = [r for r in rows if "variant_of" in r]
    ran = [r for r in survey if r["status"] == "ok"]
    identical = [r for r in ran if r["bit_identical"]]
    close = [r for r in ran if r["relative_err"] is not None and r["relative_err"] <= SCALE_TOLERANCE]
    zeros = [r for r in ran if r["output_scale"] == 0]
    wide = [r for r in ran if r["widest_cut"] >= 2]
    skipped = [r for r in rows if r["status"] == "skipped"]
    failed = [r for r in rows if r["status"] == "failed"]
    lines = [f"{len(identical)}/{len(survey)} bit-identical ({len(zeros)} of them with all-zero outputs); "
             f"{len(close)}/{len(survey)} within {SCALE_TOLERANCE:g} of the output scale; {len(wide)}/{len(ran)} run "
             f"with >= 2 tensors crossing a cut; {len(skipped)} skipped, {len(failed)} failed"]
    if variants:
        same = [r for r in variants if r["status"] == "ok" and r["bit_identical"] and r["output_scale"] > 0]
        lines.append(f"all-zero outputs run again with the zero weights random: {len(same)}/{len(variants)} "
                     "bit-identical with non-zero outputs")
    if ran:
        lines.append(f"total wall time {sum(r.get('wall_s', 0) for r in rows) / 60:.1f} min; peak memory "
                     f"{max(r.get('peak_rss_gb', 0) for r in rows):.1f} GB")
    lines += [f"- skipped {r['spec']}: {r['error']}" for r in skipped]
    lines += [f"- FAILED {r['spec']}: {r.get('error', '')}" for r in failed]
    lines += [f"- not bit-identical {r['spec']}: max abs error {r['max_abs_err']:.3g}, "
              f"{_num(r['relative_err'], '.2g')} of scale {r['output_scale']:.3g}"
              for r in rows if r["status"] == "ok" and not r["bit_identical"]]
    return "\n".join(lines)


def pick(specs: list[str], wanted: str) -> list[str]:
    """Survey specs named in a comma list, by full spec or bare name (resnet18, gpt2)."""
    out = []
    for name in (w.strip() for w in wanted.split(",") if w.strip()):
        match = [s for s in specs if name in (s, s.partition(":")[2])]
        if not match:
            sys.exit(f"--models: {name!r} is not a model of the capture survey "
                     "(e.g. resnet18, torchvision:vgg16, hf:gpt2)")
        out += match
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated models (default: every model of the capture survey)")
    parser.add_argument("--requests", type=int, default=2, help="requests per model, after one warm-up (default 2)")
    parser.add_argument("--skip-larger-than-gflops", type=float, help="skip models above this many GFLOPs")
    parser.add_argument("--max-param-gb", type=float, default=MAX_PARAM_GB,
                        help=f"skip models with more parameter bytes (default {MAX_PARAM_GB:g}: memory)")
    parser.add_argument("--timeout-s", type=float, default=1200.0, help="per model, all included (default 1200)")
    parser.add_argument("--order", choices=("size", "survey"), default="size",
                        help="size: smallest parameters first (default); survey: the capture survey's order")
    parser.add_argument("--json", help="also write the rows to this JSON file (after every model)")
    parser.add_argument("--render", help="print the table and summary of saved JSON files (comma-separated; a "
                        "model's row in a later file replaces its row in an earlier one) and exit")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--request-timeout-s", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_caught(args.one, args.requests, args.max_param_gb, args.skip_larger_than_gflops,
                                        args.request_timeout_s)))
        return
    if args.render:
        merged: dict[str, dict[str, Any]] = {}
        for path in args.render.split(","):
            merged.update({r["spec"]: r for r in json.loads(Path(path).read_text())})
        first = {spec: i for i, spec in enumerate(merged)}
        # a variant row right after the row of the model it varies
        rows = sorted(merged.values(), key=lambda r: (first.get(r.get("variant_of"), first[r["spec"]]),
                                                      "variant_of" in r))
        print(table(rows) + "\n\n" + summary(rows))
        return
    # SIGTERM must unwind through run_isolated's finally, which stops the running model's workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    specs = survey_specs()
    specs = pick(specs, args.models) if args.models else specs
    if args.order == "size":
        specs.sort(key=param_bytes_hint)  # stable: equal hints keep the survey's order
    print(f"{len(specs)} models: {', '.join(specs)}", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    while specs:
        spec = specs.pop(0)
        rows.append(run_isolated(spec, args))
        r = rows[-1]
        if spec.startswith("python:"):
            r["variant_of"] = "torchvision:" + spec.rsplit(":", 1)[1].removeprefix(VARIANT)
        elif r["status"] == "ok" and r["output_scale"] == 0 and spec.startswith("torchvision:"):
            # an all-zero output says nothing about the stages before it: run the model again, made to say something
            specs.insert(0, f"python:lossless_survey:{VARIANT}{spec.partition(':')[2]}")
        print(f"{spec}: {r['status']} identical={r.get('bit_identical')} err={r.get('max_abs_err')} "
              f"widest={r.get('widest_cut')} wall={r.get('wall_s', 0):.0f}s peak={r.get('peak_rss_gb', 0):.1f}GB "
              f"{r.get('error', '')}", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows) + "\n\n" + summary(rows))


if __name__ == "__main__":
    main()
