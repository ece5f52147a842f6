"""Link codecs in `evaluate`: bytes on the wire, codec time, and nothing changed without them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from coinfer.api import plan
from coinfer.codec_model import COMPRESSION_RATIO, Codec, codec_time_s, wire_bytes
from coinfer.cost import evaluate
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.plan import Plan
from coinfer.problem import Problem


def split(problem: Problem, codecs: dict[tuple[str, str], Codec] | None = None) -> Plan:
    return replace(plan(problem, placement="a@phone | b@edge"), codecs=codecs or {})


def test_an_fp16_link_halves_the_bytes_of_a_float32_tensor(toy_problem: Problem) -> None:
    # a's 2 MB (a hand-written graph: float32) go phone -> edge as fp16: 1 MB on the wire, so
    # 0.01 + 0.005 + 1 s at 1 MB/s, plus the codec's encode + decode of 2 MB.
    b = evaluate(split(toy_problem, {("phone", "edge"): Codec("fp16")}), toy_problem)
    sent, result = b.transfers
    assert (sent.size_bytes, sent.wire_bytes) == (2_000_000, 1_000_000)
    assert sent.codec_s == pytest.approx(codec_time_s(Codec("fp16"), 2e6)) and sent.codec_s > 0
    assert sent.time_s == pytest.approx(1.015 + sent.codec_s)
    # The result comes back edge -> phone, a link with no codec: as before.
    assert (result.wire_bytes, result.codec_s, result.time_s) == (1000, 0.0, pytest.approx(0.016))
    assert b.cut_bytes == 2_001_000 and b.wire_bytes == 1_001_000
    # Transmit energy counts the radio's time only: 1.5 W x (1.015 + 0.016) s.
    assert b.energy_by_device_j["phone"] == pytest.approx(2.0 * 1.0 + 1.5 * 1.015)
    assert b.latency_s == pytest.approx(1.2 + 1.015 + sent.codec_s + 0.016)


def test_no_codec_changes_nothing(toy_problem: Problem) -> None:
    bare = evaluate(split(toy_problem), toy_problem)
    listed = evaluate(split(toy_problem, {("phone", "edge"): Codec(), ("edge", "phone"): Codec()}), toy_problem)
    assert bare == listed
    assert all(t.wire_bytes == t.size_bytes and t.codec_s == 0.0 for t in bare.transfers)
    assert bare.latency_s == pytest.approx(3.231)  # worked out in test_terms.py


def test_a_codec_on_an_unused_link_changes_nothing(toy_problem: Problem) -> None:
    only_phone = plan(toy_problem, placement="phone")
    assert evaluate(replace(only_phone, codecs={("phone", "edge"): Codec("int8")}), toy_problem) == evaluate(
        only_phone, toy_problem)


def test_captured_specs_decide_the_wire_bytes(toy_problem: Problem) -> None:
    # A node with two outputs: float32 (1, 8, 4, 4) and int64 token ids (1, 16). int8 quantises the
    # first (128 bytes + 8 of scale/offset) and passes the ids as they are (128 bytes).
    specs = (TensorSpec(512, (1, 8, 4, 4), "float32"), TensorSpec(128, (1, 16), "int64"))
    graph = Graph("two", (GraphInput("input", TensorSpec(16, (1, 4), "float32")),), (
        Node("a", ("input",), 1e9, 640, outputs=specs), Node("b", ("a",), 1e9, 4, outputs=(TensorSpec(4),))))
    problem = replace(toy_problem, graph=graph, node_time_s={d: {"a": 1.0, "b": 1.0} for d in ("phone", "edge")})
    chosen = Plan(graph, {"a": "phone", "b": "edge"}, codecs={("phone", "edge"): Codec("int8")})
    (sent, _) = evaluate(chosen, problem).transfers
    assert sent.wire_bytes == 128 + 8 + 128 == sum(wire_bytes(Codec("int8"), s) for s in specs)
    assert sent.codec_s == pytest.approx(codec_time_s(Codec("int8"), 512))  # the ids cost no quantising


def test_a_compressor_divides_by_its_nominal_ratio(toy_problem: Problem) -> None:
    b = evaluate(split(toy_problem, {("phone", "edge"): Codec("none", "zstd")}), toy_problem)
    assert b.transfers[0].wire_bytes == pytest.approx(2e6 / COMPRESSION_RATIO[("none", "zstd")], abs=1)
