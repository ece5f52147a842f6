"""Where tensor parallelism pays: `--tensor-parallel auto` on two emulated Raspberry Pi 5s, chosen per
objective by the cost model and then measured on local workers.

For each model and link (benchmarks/llm.py's LAN and WiFi) and each objective (time per token, time
to first token), coinfer.llm.parallel_choice solves the decode (or prefill) graph with no split and
with every layer in two shards, prices both with the cost model, and keeps the better; within the
split graph `ilp` decides half-layer by half-layer whether the shards go to two devices
(coinfer.cost.parallel_groups). The links carry the runtime's own cost per message, `runtime_s`
(`--runtime-s`, default RUNTIME_S: measured on this machine by benchmarks/llm.py's tensor-parallel
rows, the gap between measured and predicted time per token over the 48 messages a token takes,
docs/llm.md), which the
emulation does not sleep: the runtime spends it by itself. The chosen plan then runs one session of
`--new-tokens` tokens after a `--prompt-tokens` prompt, every stage held to its Pi 5 time and every
link shaped.

    .venv/bin/python benchmarks/llm_tensor_parallel.py [--models gpt2,llama] [--links lan,wifi] [--runtime-s 0.0011]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from llm import cluster

from coinfer.cost import evaluate
from coinfer.llm import capture_steps, generate_tokens
from coinfer.llm.parallel_choice import choose_degree
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.options import RunOptions

RUNTIME_S = 0.0011  # s per message: 1.0-1.4 ms measured (GPT-2 and Llama, LAN and WiFi, docs/llm.md)
OBJECTIVES = {"time-per-token": "time per token", "ttft": "time to first token"}


def measure(steps: Any, plan: Any, problems: Any, new_tokens: int) -> dict[str, Any]:
    prompt = np.random.default_rng(0).integers(0, steps.vocab_size, steps.prompt_tokens, dtype=np.int64)
    with LocalWorkers(sorted(set(plan.placement.values()))) as workers, workers.client() as client:
        return generate_tokens(steps, plan, problems, client, workers.endpoint, RunOptions(emulate=True, timeout_s=300),
                               [prompt], new_tokens, stop_at_eos=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt2,llama")
    parser.add_argument("--links", default="lan,wifi")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--runtime-s", type=float, default=RUNTIME_S)
    args = parser.parse_args()
    print(f"runtime cost per message priced on every link: {args.runtime_s * 1e3:.2f} ms\n")
    print("| model | link | objective | chosen | half-layers split | TTFT predicted ms | TTFT measured ms | "
          "tokens/s predicted | tokens/s measured | bytes/token | no split: TTFT ms, tokens/s predicted |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        captured: dict[str | None, Any] = {}  # the step graphs of each degree, captured once

        def capture(split: str | None, spec: str = f"hf:{model}", kept: dict[str | None, Any] = captured) -> Any:
            if split not in kept:
                kept[split] = capture_steps(spec, args.prompt_tokens, args.new_tokens, tensor_parallel=split)
            return kept[split]

        for link in args.links.split(","):
            pis = cluster(2, link, args.runtime_s)
            for objective, label in OBJECTIVES.items():
                best, plan, candidates = choose_degree(capture, pis, objective=objective)
                r = measure(best.steps, plan, best.problems, args.new_tokens)
                p, m = r["predicted"], r["measured"]
                spread, total = best.split_half_layers
                unsplit = next(c for c in candidates if c.degree == 1)
                none_ttft = evaluate(unsplit.steps.prefill_plan(unsplit.plan), unsplit.problems[0]).latency_s
                none_rate = 1 / evaluate(unsplit.plan, unsplit.problems[1]).latency_s
                print(f"| {model} | {link} | {label} | {'no split' if best.degree == 1 else f'{best.degree} shards'} | "
                      f"{spread} of {total} | {p['ttft_s'] * 1e3:.0f} | {m['ttft_s'] * 1e3:.0f} | "
                      f"{1 / p['decode_token_s']:.2f} | {1 / m['decode_token_s']:.2f} | "
                      f"{p['wire_bytes_per_token']:,} | {none_ttft * 1e3:.0f}, {none_rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
