"""Survey: which models coinfer.capture can turn into graphs, and whether their FLOPs add up.

For every torchvision classification model and hf:gpt2/bert/vit (full size), capture the graph,
then count the whole eager model once with FlopCounterMode and compare with the node sum.
Each model runs in its own subprocess (a crash or out-of-memory in one does not end the survey).

    .venv/bin/python benchmarks/capture_survey.py [--json out.json] [--only resnet18,hf:gpt2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

TOLERANCE = 1e-3  # node sum vs whole-model count, relative


def survey_specs() -> list[str]:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    return [f"torchvision:{n}" for n in sorted(names)] + ["hf:gpt2", "hf:bert", "hf:vit"]


def measure(spec: str) -> dict[str, Any]:
    """Capture one model in this process and return its survey row."""
    from coinfer.capture import build_model, capture
    from coinfer.capture.flops import model_flops

    row: dict[str, Any] = {"spec": spec}
    start = time.perf_counter()
    try:
        graph = capture(spec)
    except Exception as exc:  # the survey reports every failure, whatever its type
        row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:400],
                   capture_s=time.perf_counter() - start)
        return row
    row.update(ok=True, capture_s=time.perf_counter() - start, nodes=len(graph.nodes),
               blocks=len(graph.blocks), gflops=graph.total_flops / 1e9,
               params_mb=graph.total_param_bytes / 1e6,
               input_shape=list(graph.source.input_shapes[0]) if graph.source else None)
    assert graph.source is not None
    model, inputs = build_model(graph.source)
    whole = model_flops(model, inputs)
    row.update(whole_gflops=whole / 1e9,
               flops_match=abs(graph.total_flops - whole) <= TOLERANCE * max(whole, 1.0))
    return row


def run_isolated(spec: str, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", spec]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"spec": spec, "ok": False, "error": f"timed out after {timeout_s:.0f} s",
                "capture_s": time.perf_counter() - start}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"spec": spec, "ok": False, "error": f"exit {done.returncode}: {tail}"[:400],
                "capture_s": time.perf_counter() - start}
    row: dict[str, Any] = json.loads(lines[-1])
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = "| model | input | nodes | blocks | GFLOPs | params MB | sum = whole | capture s | error |"
    out = [head, "|" + "---|" * 9]
    for r in rows:
        if r["ok"]:
            shape = "x".join(str(d) for d in r["input_shape"] or [])
            out.append(f"| {r['spec']} | {shape} | {r['nodes']} | {r['blocks']} | {r['gflops']:.3f} | "
                       f"{r['params_mb']:.1f} | {'yes' if r['flops_match'] else 'NO'} | "
                       f"{r['capture_s']:.1f} | |")
        else:
            err = r["error"].replace("|", "/").replace("\n", " ")
            out.append(f"| {r['spec']} | | | | | | | {r['capture_s']:.1f} | {err} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--only", help="comma-separated specs (default: every model)")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    specs = args.only.split(",") if args.only else survey_specs()
    rows = []
    for spec in specs:
        rows.append(run_isolated(spec, args.timeout_s))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    print(table(rows))
    ok = sum(r["ok"] for r in rows)
    match = sum(bool(r.get("flops_match")) for r in rows)
    print(f"\n{ok}/{len(rows)} captured; {match} with node FLOPs = whole-model FLOPs within 0.1%")


if __name__ == "__main__":
    main()
