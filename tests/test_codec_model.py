"""Codecs as data: the text form round-trips, bad text says what is valid, and the cost model's
bytes and times are worked out by hand."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinfer.codec_model import (
    ALL_CODECS,
    COMPRESSION_RATIO,
    Codec,
    channel_axis,
    codec_time_s,
    effective_codec,
    parse_codec,
    wire_bytes,
)
from coinfer.errors import CodecError, UserInputError
from coinfer.graph import TensorSpec


@pytest.mark.parametrize("codec", ALL_CODECS, ids=str)
def test_text_form_round_trips(codec: Codec) -> None:
    assert parse_codec(str(codec)) == codec


@pytest.mark.parametrize(("text", "expected"), [
    ("none", Codec()), ("fp16", Codec("fp16")), ("int8+lz4", Codec("int8", "lz4")),
    ("none+zstd", Codec("none", "zstd")), ("lz4", Codec("none", "lz4")), ("zstd", Codec("none", "zstd")),
    (" FP16+LZ4 ", Codec("fp16", "lz4")), ("int8-channel+zstd", Codec("int8-channel", "zstd")),
])
def test_parse(text: str, expected: Codec) -> None:
    assert parse_codec(text) == expected


def test_str_is_the_short_form_without_a_compressor() -> None:
    assert [str(Codec()), str(Codec("fp16")), str(Codec("none", "lz4")), str(Codec("int8", "zstd"))] == [
        "none", "fp16", "none+lz4", "int8+zstd"]


@pytest.mark.parametrize("text", ["", "fp17", "int8+gzip", "fp16+lz4+zstd", "+lz4", "lz4+fp16", "none+none",
                                  "fp16+"])
def test_bad_text_lists_the_valid_forms(text: str) -> None:
    with pytest.raises(CodecError, match=r"valid codecs are .*none, fp16, int8, int8-channel.*lz4, zstd") as info:
        parse_codec(text)
    assert isinstance(info.value, UserInputError) and isinstance(info.value, ValueError)
    assert repr(text) in str(info.value)


def test_constructing_an_unknown_codec_fails() -> None:
    with pytest.raises(CodecError):
        Codec("fp8")  # type: ignore[arg-type]


def test_lossless() -> None:
    assert [str(c) for c in ALL_CODECS if c.is_lossless] == ["none", "none+lz4", "none+zstd"]


def test_quantisers_skip_integer_tensors_and_fp16_skips_two_byte_floats() -> None:
    assert effective_codec(Codec("int8", "lz4"), "int64") == Codec("none", "lz4")
    assert effective_codec(Codec("fp16"), "bool") == Codec()
    assert effective_codec(Codec("fp16", "zstd"), "float16") == Codec("none", "zstd")
    assert effective_codec(Codec("int8"), "float16") == Codec("int8")
    assert effective_codec(Codec("fp16"), None) == Codec("fp16")  # unknown: float32


def test_channel_axis() -> None:
    # C of NCHW (and NCDHW); the hidden size of (B, C) and (B, T, C); one channel below 2-D.
    assert [channel_axis(n) for n in range(6)] == [None, None, 1, 2, 1, 1]


@pytest.mark.parametrize(("codec", "dtype", "expected"), [
    # A (1, 64, 56, 56) tensor: 200704 elements, 802816 bytes as float32.
    ("none", "float32", 802816),
    ("fp16", "float32", 401408),                       # half
    ("int8", "float32", 200704 + 8),                   # a quarter, plus one float32 scale and offset
    ("int8-channel", "float32", 200704 + 64 * 8),      # ... per channel of dim 1
    ("int8-channel", "float64", 200704 + 64 * 16),     # float64 tensors keep float64 scales
    ("fp16", "float64", 401408),
    ("int8", "int64", 200704 * 8),                     # integers pass unquantised
    ("none+lz4", "float32", math.ceil(802816 / COMPRESSION_RATIO[("none", "lz4")])),
    ("int8+zstd", "float32", 8 + math.ceil(200704 / COMPRESSION_RATIO[("int8", "zstd")])),
])
def test_wire_bytes_by_hand(codec: str, dtype: str, expected: int) -> None:
    shape = (1, 64, 56, 56)
    size = 200704 * {"float32": 4, "float64": 8, "int64": 8}[dtype]
    assert wire_bytes(parse_codec(codec), TensorSpec(size, shape, dtype)) == expected


def test_a_hand_written_tensor_counts_as_float32() -> None:
    # 4000 bytes, no shape or dtype: 1000 float32 elements, one channel.
    spec = TensorSpec(4000)
    assert [wire_bytes(parse_codec(c), spec) for c in ("none", "fp16", "int8", "int8-channel")] == [
        4000, 2000, 1008, 1008]


@given(codec=st.sampled_from(ALL_CODECS), size=st.integers(0, 10**9))
def test_codec_time_grows_with_size_and_none_is_free(codec: Codec, size: int) -> None:
    t = codec_time_s(codec, size)
    assert t >= 0 and (t == 0.0) == (codec == Codec() or size == 0)
    assert codec_time_s(codec, 2 * size) == pytest.approx(2 * t)


def test_the_data_core_needs_no_numpy() -> None:
    # The planner imports this module; only the runtime's codec may use numpy (DESIGN.md).
    source = Path(__file__).resolve().parents[1] / "src" / "coinfer" / "codec_model.py"
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source.read_text()))
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(source.read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "math", "dataclasses", "typing", "coinfer"}, imported
