"""Token generation across workers: prefill, then one decode step per new token, several sessions at once.

Both step programs are deployed under one session group (coinfer.runtime.worker.sessions), the
prefill as plan version V and the decode as V + 1. A session's prefill sends the prompt's ids to the
origin; each device runs its layers over them, writes their keys and values into its own KV cache
of that session, and passes the hidden state on; the last stage returns the greedy next token. Each
decode step then sends that token and its position, and only the new position's hidden state (with
the small per-step position and mask tensors the first stage derives) crosses each cut. Sessions
run concurrently and independently: a step of one session is sent as soon as the step before it
returned, whatever the others do.

A session ends at `max_new_tokens`, at the model's end-of-sequence token (as Hugging Face's
`generate` stops; `stop_at_eos=False` runs on), when `on_token` returns False (cancellation), or on
an error; its KV cache is freed on every worker then (`end_session`). Greedy decoding gives the
tokens Hugging Face's `generate(do_sample=False)` gives for the same model and prompt
(coinfer.llm.reference checks it with `verify`).
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from coinfer.cost import evaluate
from coinfer.errors import UserInputError, WorkerError
from coinfer.llm.steps import StepGraphs
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.runtime.client import Client, Outcome
from coinfer.runtime.deploy import deploy, taking_part
from coinfer.runtime.options import ClientAddress, Endpoint, Progress, RunOptions, SessionGroup
from coinfer.runtime.worker.sessions import MAX_SESSIONS, step_request_id

log = logging.getLogger(__name__)
OnToken = Callable[[int, int], bool]  # (session index, token) -> keep going


@dataclass
class Session:
    """One prompt's generation: its tokens, when each came, and how it ended."""

    index: int
    prompt: np.ndarray
    tokens: list[int] = field(default_factory=list)
    token_s: list[float] = field(default_factory=list)  # each token's step latency (the first: prefill's)
    ended: str | None = None  # "length", "eos", "cancelled" or "error"
    error: str | None = None

    @property
    def id(self) -> int:
        return self.index + 1  # session 0 would share request ids with stateless runs


def generate_tokens(steps: StepGraphs, plan: Plan, problems: tuple[Problem, Problem], client: Client,
                    endpoint: Endpoint, options: RunOptions, prompts: Sequence[np.ndarray], max_new_tokens: int,
                    *, stop_at_eos: bool = True, on_token: OnToken | None = None, verify: bool = False,
                    client_address: ClientAddress | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Generate up to `max_new_tokens` tokens for every prompt at once (the `coinfer generate --json` report).

    `plan` places the decode graph (`steps.decode`); `problems` are the prefill and decode problems on
    one cluster. `options` is how to run (emulation, shaping, timeouts, plan version)."""
    prefill_problem, decode_problem = problems
    _check_prompts(steps, prompts, max_new_tokens)
    if len(prompts) > steps.sessions:
        log.info("%d sessions on plans that hold the KV cache of %d", len(prompts), steps.sessions)
    prefill_plan = steps.prefill_plan(plan)
    group = SessionGroup(f"gen-{uuid.uuid4().hex[:16]}", max_sessions=len(prompts))
    first = replace(options, session=group, weights=None)
    second = replace(first, plan_version=options.plan_version + 1)
    start_s = time.perf_counter()
    devices = taking_part(plan, decode_problem)
    try:
        replies = deploy(client, prefill_plan, prefill_problem, endpoint, first, client_address, progress=progress)
        deploy(client, plan, decode_problem, endpoint, second, client_address)
        deploy_s = time.perf_counter() - start_s
        origin = decode_problem.origin
        output = next(iter(replies[origin]["results"]))
        eos = _eos_token(steps) if stop_at_eos else None
        sessions = [Session(i, np.asarray(p, dtype=np.int64).reshape(-1)) for i, p in enumerate(prompts)]
        run_start_s = time.perf_counter()
        held = _serve(client, origin, (first.plan_version, second.plan_version), output, sessions, steps,
                      max_new_tokens, eos, on_token, options.timeout_s, group.name, devices)
        elapsed_s = time.perf_counter() - run_start_s
    finally:  # also on Ctrl-C or an error: the group goes with its deployments, and every session's cache with it
        for version in (first.plan_version, second.plan_version):
            for device in devices:
                with contextlib.suppress(WorkerError):  # a worker that went away holds nothing of it
                    client.call(device, {"op": "undeploy", "plan_version": version}, 5.0)
    report = _report(steps, plan, prefill_plan, problems, sessions, held, elapsed_s, deploy_s)
    if verify:
        from coinfer.llm.reference import reference_tokens

        report["verify"] = _verify(sessions, reference_tokens(steps, prompts, max_new_tokens, stop_at_eos))
    return report


def _check_prompts(steps: StepGraphs, prompts: Sequence[np.ndarray], max_new_tokens: int) -> None:
    if not 0 < len(prompts) <= MAX_SESSIONS:
        raise UserInputError(f"give 1 to {MAX_SESSIONS} prompts (sessions), not {len(prompts)}")
    vocab = steps.vocab_size
    for i, p in enumerate(prompts):
        ids = np.asarray(p)
        if ids.ndim != 1 and not (ids.ndim == 2 and ids.shape[0] == 1):
            raise UserInputError(f"prompt {i}: give token ids as one sequence, not an array of shape {ids.shape}")
        if ids.size != steps.prompt_tokens:
            raise UserInputError(f"prompt {i} has {ids.size} tokens; these step programs were captured for "
                                 f"{steps.prompt_tokens} (capture them again for another length)")
        if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= vocab:
            raise UserInputError(f"prompt {i}: token ids must be integers in [0, {vocab}), the model's vocabulary")
    if max_new_tokens > steps.max_new_tokens:
        raise UserInputError(f"{max_new_tokens} new tokens after a prompt of {steps.prompt_tokens} need a context of "
                             f"{steps.prompt_tokens + max_new_tokens - 1}; these step programs hold {steps.context}")


def _serve(client: Client, origin: str, versions: tuple[int, int], output: str, sessions: list[Session],
           steps: StepGraphs, max_new_tokens: int, eos: int | None, on_token: OnToken | None, timeout_s: float,
           group: str, devices: tuple[str, ...]) -> dict[str, Any]:
    """The decode loop. Returns each device's sessions and state bytes, read once every session has its
    last token and before any is freed (what the KV caches held at their fullest)."""
    prefill_version, decode_version = versions
    pending: dict[int, Outcome] = {}
    by_request: dict[int, Session] = {}

    def send(s: Session, step: int) -> None:
        rid = step_request_id(s.id, step)
        if step == 0:
            inputs = {"input_ids": s.prompt[None, :], "cache_position": np.arange(s.prompt.size, dtype=np.int64)}
        else:
            position = s.prompt.size + step - 1
            inputs = {"input_ids": np.array([[s.tokens[-1]]], dtype=np.int64),
                      "cache_position": np.array([position], dtype=np.int64)}
        version = prefill_version if step == 0 else decode_version
        pending[rid] = Outcome(rid, time.perf_counter(), plan_version=version)
        by_request[rid] = s
        client.submit(origin, version, rid, inputs)

    def end(s: Session, why: str, error: str | None = None) -> None:
        s.ended, s.error = why, error

    for s in sessions:
        send(s, 0)
    while pending:
        done = client.collect(pending, (output,), 0.05)
        for outcome in done:
            s = by_request.pop(outcome.request_id)
            if not outcome.ok:
                first = outcome.errors[0] if outcome.errors else {}
                end(s, "error", f"{first.get('worker', '?')}: {first.get('error', 'no answer')}")
                continue
            token = int(np.asarray(outcome.outputs[output]).reshape(-1)[0])
            s.tokens.append(token)
            s.token_s.append(outcome.latency_s or 0.0)
            keep = on_token(s.index, token) if on_token is not None else True
            if not keep:
                end(s, "cancelled")
            elif eos is not None and token == eos:
                end(s, "eos")
            elif len(s.tokens) >= max_new_tokens:
                end(s, "length")
            else:
                send(s, len(s.tokens))
            if s.ended and s.ended != "length":
                _free(client, devices, group, s)
        now = time.perf_counter()
        for rid, outcome in list(pending.items()):
            if now - outcome.sent_s > timeout_s:
                del pending[rid]
                end(by_request.pop(rid), "error", f"step {rid & 0xFFFFF} got no answer within {timeout_s:g} s")
                client.cancel(outcome.plan_version or decode_version, rid)
    held = {d: _sessions_held(client, d, decode_version, group) for d in devices}
    for s in sessions:
        if s.ended == "length":
            _free(client, devices, group, s)
    return held


def _sessions_held(client: Client, device: str, version: int, group: str) -> dict[str, Any]:
    """What `device` holds of the session group (empty for a worker that died during the run)."""
    try:
        return dict(client.check(device, {"op": "stats", "plan_version": version}, 5.0).get("sessions", {})
                    .get(group, {}))
    except WorkerError:
        return {}


def _free(client: Client, devices: tuple[str, ...], group: str, s: Session) -> None:
    for device in devices:
        with contextlib.suppress(WorkerError):  # an unreachable worker frees it when the session expires
            client.call(device, {"op": "end_session", "group": group, "session": s.id}, 5.0)


def _eos_token(steps: StepGraphs) -> int | None:
    eos = steps.config.eos_token_id
    return int(eos[0] if isinstance(eos, list) else eos) if eos is not None else None


def _report(steps: StepGraphs, plan: Plan, prefill_plan: Plan, problems: tuple[Problem, Problem],
            sessions: list[Session], held: Mapping[str, Any], elapsed_s: float, deploy_s: float) -> dict[str, Any]:
    prefill_cost, decode_cost = evaluate(prefill_plan, problems[0]), evaluate(plan, problems[1])
    ttft = [s.token_s[0] for s in sessions if s.token_s]
    decode_s = [t for s in sessions for t in s.token_s[1:]]
    generated = sum(len(s.tokens) for s in sessions)
    per_session_tps = [(len(s.token_s) - 1) / sum(s.token_s[1:]) for s in sessions if len(s.token_s) > 1]
    kv_predicted = predicted_kv_bytes(steps, plan)
    return {
        "model": steps.spec, "plan": str(plan), "solver": plan.solver, "context": steps.context,
        "prompt_tokens": steps.prompt_tokens, "sessions": len(sessions), "deploy_s": deploy_s,
        "generated_tokens": generated, "elapsed_s": elapsed_s,
        "tokens_per_s": generated / elapsed_s if elapsed_s > 0 else None,
        "measured": {
            "ttft_s": _median(ttft), "decode_token_s": _median(decode_s),
            "session_tokens_per_s": _median(per_session_tps),
        },
        "predicted": {
            "ttft_s": prefill_cost.latency_s, "decode_token_s": decode_cost.latency_s,
            "session_tokens_per_s": 1.0 / decode_cost.latency_s if decode_cost.latency_s > 0 else None,
            "wire_bytes_per_token": sum(t.wire_bytes for t in decode_cost.transfers),
            "prefill_wire_bytes": sum(t.wire_bytes for t in prefill_cost.transfers),
        },
        "kv_cache_bytes": {d: {"predicted_per_session": kv_predicted.get(d, 0),
                               "measured_all_sessions": int(h.get("state_bytes", 0)),
                               "sessions_held": int(h.get("sessions", 0))} for d, h in held.items()},
        "outputs": [{"session": s.index, "tokens": s.tokens, "ended": s.ended, "error": s.error} for s in sessions],
        "failed": sum(1 for s in sessions if s.ended == "error"),
    }


def predicted_kv_bytes(steps: StepGraphs, plan: Plan) -> dict[str, int]:
    """Per device, the bytes of state (KV cache) one session holds there: the state of the nodes the
    device runs (coinfer.capture.api.capture_step finds it: the tensors a step writes in place)."""
    out: dict[str, int] = {}
    for node, size in steps.state_bytes.items():
        device = plan.placement[node]
        out[device] = out.get(device, 0) + size
    return out


def _verify(sessions: list[Session], expected: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Every session's tokens against the reference's (a cancelled session's: the reference's beginning),
    and how far they agree: the tokens before the first difference, and the share of positions equal
    (what a lossy codec on the hidden state costs)."""
    mismatches, agreement = [], []
    for s, full in zip(sessions, expected, strict=True):
        want = list(full)[:len(s.tokens)] if s.ended == "cancelled" else list(full)
        pairs = list(zip(s.tokens, want, strict=False))
        lead = next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))
        agreement.append({"session": s.index, "tokens_before_first_difference": lead,
                          "equal_share": sum(a == b for a, b in pairs) / max(1, len(want))})
        if s.tokens != want:
            mismatches.append({"session": s.index, "first_difference_at": lead, "got": s.tokens[lead:lead + 5],
                               "expected": want[lead:lead + 5], "got_tokens": len(s.tokens),
                               "expected_tokens": len(want)})
    return {"token_identical": not mismatches, "mismatches": mismatches, "agreement": agreement,
            "reference": "transformers generate (greedy, do_sample=False) on the same model and prompt"}


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None
