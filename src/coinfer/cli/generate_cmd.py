"""`coinfer generate`: token generation across workers, each device holding the KV cache of its layers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from coinfer.cli.common import print_json
from coinfer.errors import UserInputError
from coinfer.report import table


def register(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate tokens with a language model split over workers",
                       description="Capture MODEL's prefill and decode step programs (a static KV cache of the "
                       "context's positions), place them with --plan or --solver, and generate --max-new-tokens "
                       "tokens greedily on workers for each of --sessions prompts at once. Each device keeps the KV "
                       "cache of its own layers; per new token only the new position's hidden state crosses a cut. "
                       "--verify compares the tokens with Hugging Face's generate on the same model and prompt.")
    p.add_argument("model", metavar="MODEL", help="hf:gpt2 or hf:llama (random weights from the config)")
    p.add_argument("--cluster", required=True, metavar="FILE|PRESET", help="cluster YAML file or preset name")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--plan", metavar="FILE|PLACEMENT", help="a plan JSON (coinfer generate --save-plan), or a "
                     "one-line placement over the decode graph's nodes, e.g. 'positions..transformer.h.5@phone | "
                     "transformer.h.6..head@edge'")
    how.add_argument("--solver", default=None, help="solver placing the decode graph (default ilp; coinfer plan "
                     "--help lists them)")
    p.add_argument("--objective", default="time-per-token", help="what the solver optimises: time-per-token "
                   "(default; one decode step), ttft (time to first token: the prefill), tokens-per-s (with many "
                   "sessions the stages pipeline: the slowest sets the pace), energy-per-token, or any objective of "
                   "coinfer plan on the decode step")
    p.add_argument("--codec", action="append", default=[], metavar="[SOURCE->TARGET=]CODEC",
                   help="encode what crosses a link (the hidden state): fp16, int8, int8-channel, +lz4/+zstd; for "
                   "every link, or one directed link (repeatable). Lossy codecs change tokens: --verify then "
                   "reports how many agree")
    p.add_argument("--prompt-tokens", type=int, default=32, metavar="N", help="prompt length (default 32)")
    p.add_argument("--prompt-ids", metavar="ID,ID,...", help="the prompt's token ids (default: N seeded random ids)")
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="M", help="tokens to generate (default 32)")
    p.add_argument("--context", type=int, metavar="C", help="KV cache positions (default: prompt + new tokens)")
    p.add_argument("--sessions", type=int, default=1, metavar="K", help="prompts generated at once, each its own "
                   "session with its own KV cache (default 1)")
    p.add_argument("--no-eos", action="store_true", help="run on past the end-of-sequence token (default: stop "
                   "there, as Hugging Face's generate does)")
    p.add_argument("--layers", type=int, metavar="L", help="shrink the model to L transformer layers")
    p.add_argument("--tensor-parallel", metavar="K|LAYERS:K,...|auto", help="split transformer layers into K shards "
                   "each (Megatron's split of heads and MLP columns, an all-reduce per half-layer): K for every layer, "
                   "or e.g. 0-5:2,6:4; a plan then places the shards (model.layers.3.attn.1, ...) like layers. auto: "
                   "solve with no split and with each degree up to the devices (at most 4) that divides the heads, "
                   "and keep the best for --objective")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and prompts (default 0)")
    p.add_argument("--weights", metavar="FILE", help="the model's trained weights (.safetensors, or .pt read "
                   "weights-only), shipped to the workers")
    p.add_argument("--save-plan", type=Path, metavar="FILE", help="write the decode plan (for --plan FILE)")
    p.add_argument("--plan-only", action="store_true", help="capture and plan, print the prediction, run nothing")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="start one worker per device on this machine")
    where.add_argument("--workers", metavar="NAME=HOST:PORT,...", help="running workers (coinfer worker), by device")
    p.add_argument("--verify", action="store_true", help="compare the tokens with transformers' generate")
    p.add_argument("--emulate", choices=["plan", "off"], default=None,
                   help="hold each stage for the plan's predicted time on its device (default: plan with --local)")
    p.add_argument("--shaping", choices=["inproc", "none"], default="inproc",
                   help="link emulation in the sending worker (default), or none")
    p.add_argument("--threads", type=int, default=1, help="compute threads per local worker (default 1)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="give up on a step after this long")
    from coinfer.cli.run_cmd import add_key_arguments

    add_key_arguments(p)
    p.add_argument("--cache-dir", metavar="DIR", help="where local workers cache weight blobs")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import coinfer
    from coinfer.llm import capture_steps
    from coinfer.llm.parallel_choice import steps_and_plan
    from coinfer.llm.steps import check_fits

    _check_counts(args)
    given = _prompt_ids(args)

    def capture(tensor_parallel: str | None) -> Any:
        return capture_steps(args.model, given.size if given is not None else args.prompt_tokens, args.max_new_tokens,
                             context=args.context, layers=args.layers, seed=args.seed, weights=args.weights,
                             tensor_parallel=tensor_parallel).for_sessions(args.sessions)

    cluster = coinfer.load_cluster(args.cluster)
    user_plan = (lambda steps, problems: _decode_plan(args, steps, problems)) if args.plan else None
    steps, problems, plan, choice = steps_and_plan(capture, cluster, tensor_parallel=args.tensor_parallel,
                                                   objective=args.objective, solver=args.solver, given=user_plan)
    rng = np.random.default_rng(args.seed)
    prompts = [given] if given is not None else [rng.integers(0, steps.vocab_size, steps.prompt_tokens, dtype=np.int64)
                                                 for _ in range(args.sessions)]
    if args.codec:
        from dataclasses import replace

        from coinfer.cli.plan_cmd import codecs_from_args

        plan = replace(plan, codecs=codecs_from_args(args.codec, cluster))
    check_fits(steps, plan, problems)
    if args.save_plan:
        from coinfer.files.plan_file import save_plan

        save_plan(args.save_plan, plan, problems[1])
    if args.plan_only or not (args.local or args.workers):
        report = _prediction(steps, plan, problems)
        if choice is not None:
            report["tensor_parallel_choice"] = choice
        print_json(report) if args.json else print(_choice_text(choice, args.objective) + _prediction_text(report))
        return 0 if report["feasible"] else 1
    report = _execute(args, steps, plan, problems, prompts)
    if choice is not None:
        report["tensor_parallel_choice"] = choice
    if args.json:
        print_json(report)
    else:
        print(_choice_text(choice, args.objective) + generation_report(report))
    lossy = any(c.quantise != "none" for c in plan.codecs.values())  # then --verify measures agreement
    ok = report["failed"] == 0 and (lossy or report.get("verify", {}).get("token_identical", True))
    return 0 if ok else 1


def _check_counts(args: argparse.Namespace) -> None:
    for flag, value in (("--prompt-tokens", args.prompt_tokens), ("--max-new-tokens", args.max_new_tokens),
                        ("--sessions", args.sessions)):
        if value < 1:
            raise UserInputError(f"{flag} must be at least 1, got {value}")
    if args.prompt_ids and args.sessions != 1:
        raise UserInputError("--prompt-ids gives one prompt; drop --sessions (or give random prompts)")


def _prompt_ids(args: argparse.Namespace) -> np.ndarray | None:
    """--prompt-ids as an array, or None (then --sessions seeded random prompts of --prompt-tokens ids)."""
    if not args.prompt_ids:
        return None
    try:
        ids = [int(t) for t in args.prompt_ids.replace(" ", "").split(",") if t]
    except ValueError:
        raise UserInputError(f"--prompt-ids {args.prompt_ids[:40]!r}: give token ids separated by commas") from None
    if not ids:
        raise UserInputError("--prompt-ids is empty; give at least one token id")
    return np.array(ids, dtype=np.int64)


def _decode_plan(args: argparse.Namespace, steps: Any, problems: Any) -> Any:
    from coinfer.llm.planning import plan_generation
    from coinfer.plan import Plan

    if args.plan and _is_file(args.plan):
        from coinfer.files.plan_file import load_plan

        loaded, _ = load_plan(args.plan)
        ids = {n.id for n in steps.decode.nodes}
        if set(loaded.placement) != ids:
            raise UserInputError(f"plan {args.plan} places other nodes than {args.model}'s decode graph at context "
                                 f"{steps.context}; write it with coinfer generate --save-plan for the same model, "
                                 "--layers, context and --tensor-parallel degree (a plan saved under --tensor-parallel "
                                 "auto needs the degree auto chose)")
        return Plan(steps.decode, dict(loaded.placement), loaded.solver, codecs=dict(loaded.codecs))
    return plan_generation(steps, problems, solver=args.solver, placement=args.plan, objective=args.objective)


def _is_file(text: str) -> bool:
    """Whether --plan names a file (a one-line placement is often longer than a file name may be)."""
    try:
        return Path(text).is_file()
    except OSError:
        return False


def _execute(args: argparse.Namespace, steps: Any, plan: Any, problems: tuple[Any, Any],
             prompts: list[np.ndarray]) -> dict[str, Any]:
    from coinfer.cli.run_cmd import weight_progress, worker_site
    from coinfer.llm import generate_tokens
    from coinfer.runtime.client import Client
    from coinfer.runtime.deploy import taking_part
    from coinfer.runtime.options import RunOptions

    devices = taking_part(plan, problems[1])
    options = RunOptions(emulate=(args.emulate or ("plan" if args.local else "off")) == "plan",
                         shaping=args.shaping, timeout_s=args.timeout_s, recover=False)
    with worker_site(args, devices, options.shaping, problems[1]) as site, \
            Client(site.client_workers, site.sink_host, security=site.security) as client, \
            weight_progress() as shipped:
        sink = site.client_address(client.sink_port) if site.client_address else None
        return generate_tokens(steps, plan, problems, client, site.endpoint, options, prompts, args.max_new_tokens,
                               stop_at_eos=not args.no_eos, verify=args.verify, client_address=sink,
                               progress=shipped)


def _prediction(steps: Any, plan: Any, problems: tuple[Any, Any]) -> dict[str, Any]:
    from coinfer.cost import evaluate
    from coinfer.llm import predicted_kv_bytes

    prefill, decode = evaluate(steps.prefill_plan(plan), problems[0]), evaluate(plan, problems[1])
    return {"model": steps.spec, "plan": str(plan), "solver": plan.solver, "context": steps.context,
            "prompt_tokens": steps.prompt_tokens, "feasible": decode.feasible and prefill.feasible,
            "violations": [v.message for v in (*decode.violations, *prefill.violations)],
            "predicted": {"ttft_s": prefill.latency_s, "decode_token_s": decode.latency_s,
                          "wire_bytes_per_token": sum(t.wire_bytes for t in decode.transfers)},
            "kv_cache_bytes_per_session": predicted_kv_bytes(steps, plan)}


def _prediction_text(r: dict[str, Any]) -> str:
    p = r["predicted"]
    lines = [f"plan ({r['solver']}): {r['plan']}",
             f"predicted: time to first token {p['ttft_s'] * 1e3:.1f} ms, {p['decode_token_s'] * 1e3:.1f} ms per new "
             f"token, {p['wire_bytes_per_token']:,} B on the wire per token",
             "KV cache per session: " + ", ".join(f"{d} {b / 1e6:.2f} MB" for d, b in
                                                r["kv_cache_bytes_per_session"].items())]
    if not r["feasible"]:
        lines.append("INFEASIBLE: " + "; ".join(r["violations"]))
    lines.append("(run it: add --local, or --workers NAME=HOST:PORT,...)")
    return "\n".join(lines)


def _choice_text(choice: list[dict[str, Any]] | None, objective: str) -> str:
    """What --tensor-parallel auto compared (empty without it), each degree's objective in its units."""
    if choice is None:
        return ""
    best = min((c for c in choice if c["objective_value"] is not None), key=lambda c: c["objective_value"])

    def shown(value: float | None) -> str:
        if value is None:
            return "-"
        if objective in ("ttft", "time-per-token", "latency"):
            return f"{value * 1e3:.1f} ms"
        if objective == "tokens-per-s":
            return f"{1 / value:.2f} tokens/s" if value > 0 else "-"
        return f"{value:.4g} J" if objective == "energy-per-token" else f"{value:.6g}"

    rows = [["no split" if c["degree"] == 1 else str(c["degree"]), shown(c["objective_value"]),
             f"{c['half_layers_split']} of {c['half_layers']}" if c["half_layers"] else "-",
             "chosen" if c is best else (c["error"] or "")[:70]] for c in choice]
    return table(["tensor parallel", "objective", "half-layers split over devices", ""], rows) + "\n"


def generation_report(r: dict[str, Any]) -> str:
    """The human-readable `coinfer generate` report."""
    m, p = r["measured"], r["predicted"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.1f}"

    lines = [f"plan ({r['solver']}): {r['plan']}",
             f"{r['sessions']} session(s), prompt {r['prompt_tokens']} tokens, context {r['context']}: "
             f"{r['generated_tokens']} tokens in {r['elapsed_s']:.2f} s ({r['tokens_per_s']:.1f} tokens/s overall)",
             table(["", "predicted", "measured"],
                   [["time to first token ms", ms(p["ttft_s"]), ms(m["ttft_s"])],
                    ["per new token ms", ms(p["decode_token_s"]), ms(m["decode_token_s"])],
                    ["tokens/s per session", f"{p['session_tokens_per_s'] or 0:.1f}",
                     f"{m['session_tokens_per_s'] or 0:.1f}"]]),
             f"on the wire per new token: {p['wire_bytes_per_token']:,} B (prefill {p['prefill_wire_bytes']:,} B)",
             table(["device", "KV cache per session MB (predicted)", "held at the end, all sessions MB"],
                   [[d, f"{k['predicted_per_session'] / 1e6:.2f}", f"{k['measured_all_sessions'] / 1e6:.2f}"]
                    for d, k in r["kv_cache_bytes"].items()])]
    for o in r["outputs"]:
        shown = ",".join(str(t) for t in o["tokens"][:16]) + (" ..." if len(o["tokens"]) > 16 else "")
        lines.append(f"session {o['session']}: {len(o['tokens'])} tokens ({o['ended']}): {shown}"
                     + (f"  ERROR {o['error']}" if o["error"] else ""))
    if "verify" in r:
        v = r["verify"]
        lines.append("verify: token-identical to transformers' generate" if v["token_identical"] else
                     f"verify: DIFFERENT from transformers' generate: {v['mismatches'][:2]}")
    return "\n".join(lines)
