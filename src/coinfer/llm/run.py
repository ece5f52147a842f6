"""`generate`: the whole of `coinfer generate --local` in one Python call.

    from coinfer.llm import generate
    report = generate("hf:gpt2", "phone-edge-cloud", solver="ilp", prompt_tokens=32, max_new_tokens=64,
                      sessions=2, verify=True)
    report["outputs"][0]["tokens"], report["measured"]["ttft_s"]

It captures the step programs, plans the decode graph (a one-line `placement` or a `solver`), starts
one local worker per device taking part (links emulated as the cluster says), generates, and stops
them. For workers on other machines use `generate_tokens` with a `Client` (coinfer.llm.generation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from coinfer.cluster import Cluster
from coinfer.errors import UserInputError
from coinfer.llm.generation import OnToken, generate_tokens
from coinfer.llm.parallel_choice import steps_and_plan
from coinfer.llm.planning import plan_generation
from coinfer.llm.steps import StepGraphs, capture_steps, check_fits


def generate(model: str, cluster: str | Cluster, *, placement: str | None = None, solver: str | None = None,
             prompt_tokens: int = 32, prompts: Sequence[Sequence[int]] | None = None, max_new_tokens: int = 32,
             sessions: int = 1, context: int | None = None, layers: int | None = None, seed: int = 0,
             tensor_parallel: str | int | None = None,
             weights: str | None = None, objective: str = "time-per-token", codecs: Mapping[str, str] | None = None,
             verify: bool = False, emulate: bool = True,
             stop_at_eos: bool = True, on_token: OnToken | None = None, threads: int = 1,
             timeout_s: float = 60.0) -> dict[str, Any]:
    """Generate on local workers and return the report (`coinfer generate --json`'s). `prompts` gives the
    prompts' token ids (all of one length); without it, `sessions` seeded random prompts of
    `prompt_tokens` ids. `objective` is one of coinfer.llm.planning's (time-per-token, ttft, tokens-per-s,
    energy-per-token) or the cost model's; `codecs` maps "SOURCE->TARGET" to a codec ("int8") for what
    crosses that link. `tensor_parallel` splits layers into shards (coinfer.capture.tensor_parallel: "2" for
    every layer, "0-5:2"), or "auto" picks the degree for the objective (coinfer.llm.parallel_choice; the
    report's `tensor_parallel_choice` lists what it compared). `on_token(session, token)` returning False
    cancels that session."""
    import coinfer
    from coinfer.runtime.deploy import taking_part
    from coinfer.runtime.local import LocalWorkers
    from coinfer.runtime.options import RunOptions

    lengths = {len(p) for p in prompts} if prompts is not None else {prompt_tokens}
    if len(lengths) != 1:
        raise UserInputError(f"the prompts have {len(lengths)} different lengths; give prompts of one length")
    length, count = lengths.pop(), len(prompts) if prompts is not None else sessions

    def capture(split: str | None) -> StepGraphs:  # every device's memory holds each session's KV cache
        return capture_steps(model, length, max_new_tokens, context=context, layers=layers, seed=seed,
                             weights=weights, tensor_parallel=split).for_sessions(count)

    the_cluster = coinfer.load_cluster(cluster) if isinstance(cluster, str) else cluster
    given = None if placement is None else (lambda steps, problems: plan_generation(
        steps, problems, solver=solver, placement=placement, objective=objective))
    steps, problems, plan, choice = steps_and_plan(capture, the_cluster, tensor_parallel=tensor_parallel,
                                                   objective=objective, solver=solver, given=given)
    if prompts is None:
        rng = np.random.default_rng(seed)
        arrays = [rng.integers(0, steps.vocab_size, steps.prompt_tokens, dtype=np.int64) for _ in range(sessions)]
    else:
        arrays = [np.asarray(p, dtype=np.int64) for p in prompts]
    if codecs:
        from coinfer.files.plan_file import link_codecs

        plan = replace(plan, codecs=link_codecs(dict(codecs), the_cluster, "codecs"))
    check_fits(steps, plan, problems)
    options = RunOptions(emulate=emulate, timeout_s=timeout_s, recover=False)
    with LocalWorkers(taking_part(plan, problems[1]), threads) as workers, workers.client() as client:
        report = generate_tokens(steps, plan, problems, client, workers.endpoint, options, arrays, max_new_tokens,
                                 stop_at_eos=stop_at_eos, on_token=on_token, verify=verify)
    if choice is not None:
        report["tensor_parallel_choice"] = choice
    return report
