"""Generation across three workers: token-identical to transformers' generate, sessions kept apart,
cancelled and freed, and the bad inputs the issue names refused with clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from coinfer.api import plan as make_plan
from coinfer.errors import InfeasibleError, UserInputError, WorkerError
from coinfer.llm import capture_steps, generate_tokens, reference_tokens
from coinfer.llm.steps import check_fits
from coinfer.runtime.deploy import deploy
from coinfer.runtime.options import RunOptions
from tests.llm.conftest import NEW_TOKENS, PROMPT_TOKENS, problems

# one layer per device: every decode step crosses two cuts, and every device holds a KV cache
SPLIT = "positions..model.layers.0@a | model.layers.1@b | model.layers.2..head@c"


def _prompts(steps, count, seed=1):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return [rng.integers(0, steps.vocab_size, steps.prompt_tokens, dtype=np.int64) for _ in range(count)]


def test_prefill_and_decode_graphs_have_the_same_nodes(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    pre, dec = tiny_llama.prefill, tiny_llama.decode
    assert [(n.id, n.inputs) for n in pre.nodes] == [(n.id, n.inputs) for n in dec.nodes]
    assert [n.id for n in dec.nodes] == ["positions", "embed", "model.layers.0", "model.layers.1", "model.layers.2",
                                         "head"]
    # every later device reads the positions (mask, rotary tables: about 1 kB a step), only layer 0 the embeddings
    positions = dec.node("positions")
    assert positions.output_bytes < 2048 and positions.param_bytes < 1024  # the rotary frequencies, no weights
    assert [n.id for n in dec.nodes if "embed" in n.inputs] == ["model.layers.0"]
    assert pre.inputs[0].spec.shape == (1, PROMPT_TOKENS) and dec.inputs[0].spec.shape == (1, 1)


def test_three_sessions_across_three_workers_equal_transformers_generate(  # type: ignore[no-untyped-def]
        tiny_llama, three, workers) -> None:
    pre, dec = problems(tiny_llama, three)
    plan = make_plan(dec, placement=SPLIT)
    prompts = _prompts(tiny_llama, 3)
    stopped_after, cancelled = 3, []

    def on_token(session: int, token: int) -> bool:  # cancel session 1 after its third token
        if session != 1:
            return True
        cancelled.append(token)
        return len(cancelled) < stopped_after

    with workers.client() as client:
        report = generate_tokens(tiny_llama, plan, (pre, dec), client, workers.endpoint, RunOptions(), prompts,
                                 NEW_TOKENS, stop_at_eos=False, on_token=on_token)
        after = {d: client.check(d, {"op": "stats", "plan_version": 2})["sessions"] for d in ("a", "b", "c")}
    expected = reference_tokens(tiny_llama, prompts, NEW_TOKENS, stop_at_eos=False)
    out = report["outputs"]
    assert out[0]["tokens"] == expected[0] and len(expected[0]) == NEW_TOKENS and out[0]["ended"] == "length"
    assert out[2]["tokens"] == expected[2] and out[2]["ended"] == "length"
    assert out[1]["ended"] == "cancelled" and out[1]["tokens"] == expected[1][:stopped_after]
    assert expected[0] != expected[2]  # different prompts, different tokens: sessions that mixed would show
    # while the two others had their last token, the cancelled session's cache was already freed
    kv = report["kv_cache_bytes"]
    for device in ("a", "b", "c"):
        assert kv[device]["sessions_held"] == 2
        assert kv[device]["measured_all_sessions"] == 2 * kv[device]["predicted_per_session"] > 0
    assert after == {"a": {}, "b": {}, "c": {}}  # ended, and the group gone with its deployments
    assert report["predicted"]["wire_bytes_per_token"] > 0 and report["failed"] == 0


@pytest.mark.slow
def test_greedy_tokens_stop_at_end_of_sequence_as_transformers_does(tiny_llama, three, workers) -> None:  # type: ignore[no-untyped-def]
    pre, dec = problems(tiny_llama, three)
    plan = make_plan(dec, placement=SPLIT)
    prompts = _prompts(tiny_llama, 1, seed=5)
    with workers.client() as client:
        report = generate_tokens(tiny_llama, plan, (pre, dec), client, workers.endpoint, RunOptions(), prompts,
                                 NEW_TOKENS, verify=True)
    assert report["verify"]["token_identical"], report["verify"]
    assert report["measured"]["ttft_s"] > 0 and report["measured"]["decode_token_s"] > 0


def test_a_stateful_deployment_without_a_session_group_is_refused(tiny_llama, three, workers) -> None:  # type: ignore[no-untyped-def]
    pre, _ = problems(tiny_llama, three)
    plan = tiny_llama.prefill_plan(make_plan(problems(tiny_llama, three)[1], placement=SPLIT))
    with workers.client() as client, pytest.raises(WorkerError, match="session group"):
        deploy(client, plan, pre, workers.endpoint, RunOptions(plan_version=40))


def test_a_prompt_past_the_context_is_refused_before_anything_is_captured() -> None:
    with pytest.raises(UserInputError, match=r"context of 2048 positions.*needs 2057"):
        capture_steps("hf:llama", 2050, 8)
    with pytest.raises(UserInputError, match="context of 16 positions cannot hold"):
        capture_steps("hf:gpt2", 10, 8, context=16)


def test_prompts_of_another_length_or_outside_the_vocabulary_are_refused(tiny_llama, three, workers) -> None:  # type: ignore[no-untyped-def]
    pre, dec = problems(tiny_llama, three)
    plan = make_plan(dec, placement=SPLIT)
    with workers.client() as client:
        for prompts, message in (([np.arange(PROMPT_TOKENS + 1)], "captured for 5"),
                                 ([np.full(PROMPT_TOKENS, tiny_llama.vocab_size)], "vocabulary"),
                                 (_prompts(tiny_llama, 1), "context of")):
            new = NEW_TOKENS + 5 if message == "context of" else NEW_TOKENS
            with pytest.raises(UserInputError, match=message):
                generate_tokens(tiny_llama, plan, (pre, dec), client, workers.endpoint, RunOptions(), prompts, new)


@pytest.mark.slow
def test_a_device_without_memory_for_its_kv_cache_at_the_context_is_infeasible() -> None:
    from coinfer.cost import memory_need_bytes
    from coinfer.files.cluster_file import cluster_from_dict
    from tests.llm.conftest import THREE

    one_layer = "positions..embed@a | model.layers.0@b | head@c"
    short = capture_steps("hf:llama", 4, 4, layers=1)  # a context of 7 positions
    long = capture_steps("hf:llama", 4, 2045, layers=1)  # 2048: 4.2 MB of keys and values in the layer
    need = memory_need_bytes(make_plan(problems(short, cluster_from_dict(THREE, "3"))[1], placement=one_layer),
                             problems(short, cluster_from_dict(THREE, "3"))[1])["b"]
    small = {**THREE, "devices": {**THREE["devices"], "b": {"flops_per_s": 1e10, "memory_bytes": need + 1_000_000}}}
    cluster = cluster_from_dict(small, "b with 1 MB to spare")
    for steps in (short, long):
        pre, dec = problems(steps, cluster)
        if steps is short:
            check_fits(steps, make_plan(dec, placement=one_layer), (pre, dec))
        else:
            with pytest.raises(InfeasibleError, match=r"context of 2048 positions.*device b needs .* MB but has"):
                check_fits(steps, make_plan(dec, placement=one_layer), (pre, dec))


@pytest.mark.slow
def test_an_int8_hidden_state_is_decoded_on_the_next_device_and_agreement_is_reported(  # type: ignore[no-untyped-def]
        tiny_llama, three, workers) -> None:
    from dataclasses import replace

    from coinfer.codec_model import parse_codec

    pre, dec = problems(tiny_llama, three)
    plan = replace(make_plan(dec, placement=SPLIT), codecs={("a", "b"): parse_codec("int8"),
                                                            ("b", "c"): parse_codec("fp16")})
    with workers.client() as client:
        report = generate_tokens(tiny_llama, plan, (pre, dec), client, workers.endpoint, RunOptions(plan_version=50),
                                 _prompts(tiny_llama, 2, seed=9), NEW_TOKENS, stop_at_eos=False, verify=True)
    assert report["failed"] == 0 and all(len(o["tokens"]) == NEW_TOKENS for o in report["outputs"])
    for a in report["verify"]["agreement"]:
        assert 0 <= a["tokens_before_first_difference"] <= NEW_TOKENS and 0.0 <= a["equal_share"] <= 1.0
    # int8 (1 byte a value plus a scale and offset) where raw float32 would be 4 bytes a value
    assert report["predicted"]["wire_bytes_per_token"] < 3 * 768 + 2 * 1100


@pytest.mark.slow
def test_the_users_trained_weights_travel_with_the_deployment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A state dict other than the seed's (saved as a user would) runs across two workers, token-identical to
    transformers with the same weights, and gives other tokens than the seed's weights."""
    import safetensors.torch
    import torch
    import transformers

    from coinfer.capture.hf import hf_config
    from coinfer.llm import generate

    torch.manual_seed(123)
    trained = transformers.GPT2LMHeadModel(hf_config("gpt2", 2, use_cache=True)).eval()
    path = tmp_path / "trained.safetensors"
    safetensors.torch.save_file({k: v.contiguous().clone() for k, v in trained.state_dict().items()}, str(path))
    common = {"layers": 2, "prompt_tokens": 4, "max_new_tokens": 6, "stop_at_eos": False, "emulate": False}
    theirs = generate("hf:gpt2", "phone-edge-cloud", weights=str(path), verify=True,
                      placement="positions..transformer.h.0@phone | transformer.h.1..head@edge", **common)
    seeds = generate("hf:gpt2", "phone-edge-cloud", placement="positions..head@phone", **common)
    assert theirs["verify"]["token_identical"]
    assert theirs["outputs"][0]["tokens"] != seeds["outputs"][0]["tokens"]
    # split in shards, the user's weights are sliced: layer 1's shards on two workers, the same tokens
    split = generate("hf:gpt2", "phone-edge-cloud", weights=str(path), verify=True, tensor_parallel="1:2",
                     placement="positions..transformer.h.1.attn.0@phone | transformer.h.1.attn.1@edge | "
                               "transformer.h.1.attn_sum..transformer.h.1.mlp.0@phone | transformer.h.1.mlp.1@edge | "
                               "transformer.h.1.mlp_sum..head@phone", **common)
    assert split["verify"]["token_identical"]
    assert split["outputs"][0]["tokens"] == theirs["outputs"][0]["tokens"]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "layers"), [("hf:llama", "model.layers"), ("hf:gpt2", "transformer.h")])
def test_a_tensor_parallel_layer_between_pipeline_stages_generates_the_same_tokens(  # type: ignore[no-untyped-def]
        model, layers, three, workers) -> None:
    """Layer 1 split in two shards on a and b (its norms and sums on a), layers 0 and 2 whole on a and c:
    pipeline stages and a tensor-parallel group in one plan; four hidden states cross a<->b per token."""
    steps = capture_steps(model, PROMPT_TOKENS, NEW_TOKENS, layers=3, tensor_parallel="1:2")
    pre, dec = problems(steps, three)
    plan = make_plan(dec, placement=f"positions..{layers}.1.attn.0@a | {layers}.1.attn.1@b | "
                                   f"{layers}.1.attn_sum..{layers}.1.mlp.0@a | {layers}.1.mlp.1@b | "
                                   f"{layers}.1.mlp_sum@a | {layers}.2..head@c")
    with workers.client() as client:
        report = generate_tokens(steps, plan, (pre, dec), client, workers.endpoint, RunOptions(plan_version=60),
                                 _prompts(steps, 2, seed=4), NEW_TOKENS, stop_at_eos=False, verify=True)
    assert report["verify"]["token_identical"], report["verify"]
    kv = report["kv_cache_bytes"]
    assert kv["b"]["predicted_per_session"] > 0
    assert kv["b"]["measured_all_sessions"] == 2 * kv["b"]["predicted_per_session"]
    hops = [t for t in evaluate_transfers(plan, dec) if {t.source, t.target} == {"a", "b"} and t.tensor != "positions"]
    assert len(hops) == 4 and all(t.size_bytes == 768 * 4 for t in hops)  # two all-reduces of the hidden state


def evaluate_transfers(plan, problem):  # type: ignore[no-untyped-def]
    from coinfer.cost import evaluate

    return evaluate(plan, problem).transfers


@pytest.mark.slow
def test_a_worker_killed_mid_generation_fails_its_sessions_with_a_clear_error(tiny_llama, three) -> None:  # type: ignore[no-untyped-def]
    """No recovery for generation yet (docs/llm.md): the sessions end in an error naming the step, the report
    still comes back, and the surviving workers serve on with nothing of the sessions left."""
    from coinfer.runtime.local import LocalWorkers

    pre, dec = problems(tiny_llama, three)
    plan = make_plan(dec, placement=SPLIT)
    with LocalWorkers(("a", "b", "c")) as running, running.client() as client:
        tokens: list[int] = []

        def on_token(session: int, token: int) -> bool:
            tokens.append(token)
            if len(tokens) == 2:
                running.kill("b")
            return True

        report = generate_tokens(tiny_llama, plan, (pre, dec), client, running.endpoint, RunOptions(timeout_s=4),
                                 _prompts(tiny_llama, 1), NEW_TOKENS, stop_at_eos=False, on_token=on_token)
        assert client.check("a", {"op": "health"})["compute"] == "alive"
        assert client.check("a", {"op": "stats", "plan_version": 2})["sessions"] == {}
    (out,) = report["outputs"]
    assert out["ended"] == "error" and "got no answer within 4 s" in out["error"] and len(out["tokens"]) == 2
    assert report["failed"] == 1
    assert report["kv_cache_bytes"]["b"]["sessions_held"] == 0  # the dead worker could not be read
