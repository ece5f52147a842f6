"""Generation plans compared on the same clusters: coinfer's solvers under each LLM objective, exo's
memory-proportional split, and the throughput-optimal pipeline (`pipeline-dp`), all priced by one
cost model.

For each cluster and model (prompt `--prompt-tokens`, `--new-tokens` new ones) it prints, per plan,
the predicted time to first token, time per new token (one session), tokens per second with many
sessions in flight (the pipeline's bottleneck), energy per new token, bytes on the wire per token,
and whether every device holds its weights and one session's KV cache. Then `ilp` on the graph
whose every layer is split in two shards (tensor parallelism): where it places a layer's two
shards on two devices, splitting paid (the span of coinfer.cost.parallel_groups). Every link
carries the runtime's own cost per message, `--runtime-s` (default 1.1 ms: benchmarks/llm.py's
tensor-parallel rows on this machine, measured less predicted time per token over the 48 messages
a token takes, docs/llm.md), which is what decides whether those messages pay. Predicted, not
measured: `benchmarks/llm.py` and `benchmarks/llm_tensor_parallel.py` measure plans on workers.

    .venv/bin/python benchmarks/llm_plans.py [--models gpt2,llama] [--clusters pi-laptop-desktop,...]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from coinfer.cost import evaluate
from coinfer.errors import CoinferError
from coinfer.files.cluster_file import cluster_from_dict, load_cluster
from coinfer.llm import capture_steps
from coinfer.llm.planning import generation_problems, plan_generation

# Three Raspberry Pis of different memory on one switch (exo's home setting): memory shares are not
# speed shares.
PIS = {"devices": {"pi4-4g": {"device": "rpi4b", "memory_bytes": 4e9, "origin": True},
                   "pi5-8g": {"device": "rpi5", "memory_bytes": 8e9},
                   "pi4-8g": {"device": "rpi4b", "memory_bytes": 8e9}},
       "links": [{"between": [a, b], "bandwidth_bits_per_s": 1e9, "latency_s": 0.0003}
                 for a, b in (("pi4-4g", "pi5-8g"), ("pi5-8g", "pi4-8g"), ("pi4-4g", "pi4-8g"))]}
CANDIDATES = [  # (label, solver, objective)
    ("ilp, time per token", "ilp", "time-per-token"),
    ("ilp, time to first token", "ilp", "ttft"),
    ("ilp, energy per token", "ilp", "energy-per-token"),
    ("pipeline-dp (throughput)", "pipeline-dp", "tokens-per-s"),
    ("exo (memory shares)", "exo", "time-per-token"),
    ("origin only", "origin-only", "time-per-token"),
]
TENSOR_PARALLEL = [  # on the graph whose every layer is split in two shards (coinfer.capture.tensor_parallel)
    ("ilp, time per token, layers in 2 shards", "ilp", "time-per-token"),
    ("ilp, time to first token, layers in 2 shards", "ilp", "ttft"),
    ("ilp, tokens/s, layers in 2 shards", "ilp", "tokens-per-s"),
]
RUNTIME_S = 0.0011  # s per message (benchmarks/llm.py's tensor-parallel rows, docs/llm.md)


def cluster_named(name: str, runtime_s: float) -> Any:
    """A preset (or the three Pis) with the runtime's cost per message on every link."""
    cluster = cluster_from_dict(PIS, "three-pis") if name == "three-pis" else load_cluster(name)
    return replace(cluster, links=tuple(replace(link, runtime_s=runtime_s) for link in cluster.links))


def row(label: str, steps: Any, cluster: Any, solver: str, objective: str) -> tuple[list[str], Any]:
    problems = generation_problems(steps, cluster, objective)
    try:
        plan = plan_generation(steps, problems, solver=solver, objective=objective)
    except CoinferError as exc:
        return [label, "-", "-", "-", "-", "-", "-", f"no plan: {str(exc)[:60]}"], None
    pre, dec = generation_problems(steps, cluster)  # every plan costed under the same problems
    p, d = evaluate(steps.prefill_plan(plan), pre), evaluate(plan, dec)
    energy = evaluate(plan, generation_problems(steps, cluster, "energy-per-token")[1]).energy_j
    fits = "yes" if p.feasible and d.feasible else "NO: " + "; ".join(v.message for v in (*p.violations,
                                                                                          *d.violations))[:60]
    return [label, f"{p.latency_s * 1e3:.0f}", f"{d.latency_s * 1e3:.1f}", f"{d.throughput_rps:.1f}",
            f"{energy:.2f}", f"{d.wire_bytes:,}", fits, f"`{plan}`"], plan


def _shard_devices(plan: Any) -> list[str]:
    """How many layers' halves run their two shards on two devices (tensor parallelism used), and
    where; 'none' when the solver kept every layer's shards on one device (splitting did not pay)."""
    apart: dict[str, int] = {}
    for node, device in plan.placement.items():
        other = plan.placement.get(node[:-1] + "0")
        if node.endswith((".attn.1", ".mlp.1")) and other != device:
            pair = f"{other}+{device}"
            apart[pair] = apart.get(pair, 0) + 1
    return [f"{n} half-layers on {pair}" for pair, n in sorted(apart.items())] or ["none"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt2,llama")
    parser.add_argument("--clusters", default="three-pis,pi-laptop-desktop,phone-edge-cloud")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runtime-s", type=float, default=RUNTIME_S)
    args = parser.parse_args()
    print(f"runtime cost per message priced on every link: {args.runtime_s * 1e3:.2f} ms")
    for model in args.models.split(","):
        steps = capture_steps(f"hf:{model}", args.prompt_tokens, args.new_tokens)
        split = capture_steps(f"hf:{model}", args.prompt_tokens, args.new_tokens, tensor_parallel=2)
        for name in args.clusters.split(","):
            cluster = cluster_named(name, args.runtime_s)
            print(f"\n#### {model} on {name}: prompt {args.prompt_tokens}, {args.new_tokens} new tokens\n")
            print("| plan | TTFT ms | ms per token | tokens/s, many sessions | J per token | bytes/token | fits | "
                  "placement |")
            print("|---|---|---|---|---|---|---|---|")
            for label, solver, objective in CANDIDATES:
                print("| " + " | ".join(row(label, steps, cluster, solver, objective)[0]) + " |", flush=True)
            for label, solver, objective in TENSOR_PARALLEL:
                cells, plan = row(label, split, cluster, solver, objective)
                if plan is not None:
                    cells[-1] = "shards apart: " + ", ".join(_shard_devices(plan))
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
