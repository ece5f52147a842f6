"""Token generation across 1, 2 and 3 emulated Raspberry Pi 5s: time to first token, tokens per second,
bytes on the wire per token and KV-cache memory per device, GPT-2 and coinfer's Llama configuration.

Each device is an emulated `rpi5` (coinfer's catalog: 4 Cortex-A76 cores, LPDDR4X), on a LAN
(1 Gbit/s, 0.3 ms) or WiFi (50 Mbit/s, 3 ms). The plan is the pipeline that gives each device an
equal share of the transformer layers (the embeddings on the first, the LM head on the last). For
each case the benchmark captures the prefill and decode step programs, starts one local worker per
device, and generates `--new-tokens` tokens greedily after a `--prompt-tokens` prompt, one session,
with every stage held to the device's predicted time (emulation) and every link shaped in the
sending worker. Measured: the prefill's latency (time to first token) and the decode steps' median
(tokens per second = 1 / that); then as many sessions as devices at once, whose steps pipeline
through the stages (tokens per second over all of them, after the prefills; predicted: the decode
plan's throughput, 1 / its slowest stage or link). Bytes per token: what the plan sends across its cuts per decode step
(coinfer.cost). KV cache: the bytes of keys and values one session holds on each device, predicted
from the step program's state and read from the workers while the session is live.

Beside it: distributed-llama's published bytes per token for tensor parallelism on Llama-3-8B (544
kB on 2 devices, 816 kB on 4; ../shared/REFERENCE.md section 9), scaled to each model's layers and
hidden size (bytes per token grow with layers x hidden x bytes per element; distributed-llama sends
Q80, 34 bytes per 32 values, coinfer float32).

Then the same on 2 devices with every layer split in two (Megatron's tensor parallelism,
coinfer.capture.tensor_parallel): shard j of each layer on device j, the norms and sums on the
first; two all-reduces of the hidden state per layer cross the link.

    .venv/bin/python benchmarks/llm.py [--models gpt2,llama] [--devices 1,2,3] [--links lan,wifi]
                                       [--prompt-tokens 32] [--new-tokens 32] [--tensor-parallel 2]
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from typing import Any

import numpy as np

from coinfer.api import make_problem
from coinfer.api import plan as make_plan
from coinfer.capture.hf import hf_config
from coinfer.cost import evaluate
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.llm import capture_steps, generate_tokens
from coinfer.plan import Plan
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.options import RunOptions

LINKS = {"lan": (1e9, 0.0003), "wifi": (50e6, 0.003)}
LAYER_PREFIX = {"gpt2": "transformer.h", "llama": "model.layers"}
# distributed-llama on Llama-3-8B (32 layers, hidden 4096, Q80 activations: 34 bytes per 32 values)
DLLAMA_BYTES_PER_TOKEN = {2: 544e3, 4: 816e3}
DLLAMA_LAYER_ELEMENT_BYTES = 32 * 4096 * 34 / 32


def cluster(n: int, link: str, runtime_s: float = 0.0) -> Any:
    """n emulated Pi 5s on one kind of link; `runtime_s` the runtime's cost per message (coinfer.cluster.Link)."""
    bandwidth, latency = LINKS[link]
    names = [f"pi{i + 1}" for i in range(n)]
    devices = {name: {"device": "rpi5", **({"origin": True} if i == 0 else {})} for i, name in enumerate(names)}
    links = [{"between": [a, b], "bandwidth_bits_per_s": bandwidth, "latency_s": latency, "runtime_s": runtime_s}
             for i, a in enumerate(names) for b in names[i + 1:]]
    return cluster_from_dict({"devices": devices, "links": links}, f"{n} x rpi5 on {link}")


def even_pipeline(model: str, layers: int, n: int) -> str:
    """Equal shares of the layers, in order; the first device also runs `positions` and `embed`."""
    prefix = LAYER_PREFIX[model]
    bounds = [round(i * layers / n) for i in range(n + 1)]
    parts = []
    for i in range(n):
        first = "positions" if i == 0 else f"{prefix}.{bounds[i]}"
        last = "head" if i == n - 1 else f"{prefix}.{bounds[i + 1] - 1}"
        parts.append(f"{first}..{last}@pi{i + 1}" if first != last else f"{first}@pi{i + 1}")
    return " | ".join(parts)


def tensor_parallel_plan(steps: Any, n: int) -> dict[str, str]:
    """Every layer's shard j on device j + 1; its norms and sums, the embeddings and the head on the first."""
    placement = {}
    for node in steps.decode.nodes:
        shard = re.search(r"\.(attn|mlp)\.(\d+)$", node.id)
        placement[node.id] = f"pi{int(shard.group(2)) + 1}" if shard else "pi1"
    return placement


def run_case(model: str, steps: Any, n: int, link: str, new_tokens: int,
             tensor_parallel: bool = False) -> tuple[dict[str, Any], dict[str, Any], float]:
    """(one session's report, the report of n sessions at once, the decode plan's predicted throughput)."""
    the_cluster = cluster(n, link)
    pre, dec = make_problem(steps.prefill, the_cluster), make_problem(steps.decode, the_cluster)
    layers = int(hf_config(model, None).num_hidden_layers)
    plan = (Plan(steps.decode, tensor_parallel_plan(steps, n)) if tensor_parallel
            else make_plan(dec, placement=even_pipeline(model, layers, n)))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, steps.vocab_size, steps.prompt_tokens, dtype=np.int64) for _ in range(n)]
    options = RunOptions(emulate=True, timeout_s=300)
    with LocalWorkers(the_cluster.device_names) as workers, workers.client() as client:
        one = generate_tokens(steps, plan, (pre, dec), client, workers.endpoint, options, prompts[:1], new_tokens,
                              stop_at_eos=False)
        many = generate_tokens(steps, plan, (pre, dec), client, workers.endpoint, replace(options, plan_version=3),
                               prompts, new_tokens, stop_at_eos=False)
    return one, many, evaluate(plan, dec).throughput_rps


def table_row(model: str, devices: str, link: str, plan: str, r: dict[str, Any], many: dict[str, Any],
              throughput: float) -> str:
    """One row: a session's report `r`, the report `many` of one session per device at once."""
    p, m, kv = r["predicted"], r["measured"], r["kv_cache_bytes"]
    decode_s = many["elapsed_s"] - many["measured"]["ttft_s"]  # the sessions' prefills overlap
    rate = (many["generated_tokens"] - many["sessions"]) / decode_s
    kv_predicted = " / ".join(f"{k['predicted_per_session'] / 1e6:.1f}" for k in kv.values())
    kv_measured = " / ".join(f"{k['measured_all_sessions'] / 1e6:.1f}" for k in kv.values())
    return (f"| {model} | {devices} | {link} | {plan} | {p['ttft_s'] * 1e3:.0f} | {m['ttft_s'] * 1e3:.0f} | "
            f"{1 / p['decode_token_s']:.2f} | {1 / m['decode_token_s']:.2f} | {p['wire_bytes_per_token']:,} | "
            f"{kv_predicted} | {kv_measured} | {many['sessions']} | {throughput:.2f} | {rate:.2f} |")


def dllama_scaled(model: str) -> str:
    config = hf_config(model, None)
    ours = config.num_hidden_layers * config.hidden_size * 4.0
    scale = ours / DLLAMA_LAYER_ELEMENT_BYTES
    return ", ".join(f"{n} devices {DLLAMA_BYTES_PER_TOKEN[n] * scale / 1e3:.0f} kB" for n in (2, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt2,llama")
    parser.add_argument("--devices", default="1,2,3")
    parser.add_argument("--links", default="lan,wifi")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--tensor-parallel", default="2", help="devices of the tensor-parallel rows (every layer "
                        "split that many ways; empty: none)")
    args = parser.parse_args()
    print("| model | devices | link | plan | TTFT predicted ms | TTFT measured ms | tokens/s predicted | "
          "tokens/s measured | bytes/token | KV cache per device, predicted MB | KV held by the workers MB | "
          "sessions at once | tokens/s all sessions, predicted | tokens/s all sessions, measured |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        steps = capture_steps(f"hf:{model}", args.prompt_tokens, args.new_tokens)
        for link in args.links.split(","):
            for n in (int(d) for d in args.devices.split(",")):
                if n == 1 and link != args.links.split(",")[0]:
                    continue  # one device sends nothing: the link does not matter
                r, many, throughput = run_case(model, steps, n, link, args.new_tokens)
                print(table_row(model, str(n), link if n > 1 else "-", f"`{r['plan']}`", r, many, throughput),
                      flush=True)
        for n in (int(d) for d in args.tensor_parallel.split(",") if d):
            split = capture_steps(f"hf:{model}", args.prompt_tokens, args.new_tokens, tensor_parallel=n)
            for link in args.links.split(","):
                r, many, throughput = run_case(model, split, n, link, args.new_tokens, tensor_parallel=True)
                print(table_row(model, f"{n}, tensor parallel", link, f"every layer in {n} shards, one per device; "
                                "norms, sums, embeddings and head on pi1", r, many, throughput), flush=True)
        print(f"\ndistributed-llama's tensor-parallel bytes per token scaled to {model}: {dllama_scaled(model)}\n")


if __name__ == "__main__":
    main()
