"""The wire format: round trips of every dtype, chunking, and malformed frames named precisely."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinfer.errors import WireError
from coinfer.runtime import wire

DTYPES = ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips_bit_exactly(dtype: str) -> None:
    array = (np.random.default_rng(1).standard_normal((2, 3, 5)) * 50).astype(dtype)
    message = wire.unpack(wire.tensor_frames(array, "layer1.0.add_", 7, 3))
    assert message.header.name == "layer1.0.add_" and message.header.request_id == 7
    assert message.header.plan_version == 3
    got = wire.read_tensor(message)
    assert got.dtype == array.dtype and got.shape == array.shape and np.array_equal(got, array)


def test_a_plain_payload_is_one_frame_and_an_encrypted_one_travels_in_chunks() -> None:
    array = np.arange(1001, dtype=np.float32)  # 4004 bytes
    assert len(wire.tensor_frames(array, "x", 1, 1)) == 3  # read in place by the receiver, as a raw socket would
    frames = wire.tensor_frames(array, "x", 1, 1, chunk_bytes=1000)  # five chunks, the last one 4 bytes
    assert [memoryview(f).nbytes for f in frames[2:]] == [1000, 1000, 1000, 1000, 4]
    assert np.array_equal(wire.read_tensor(wire.unpack([bytes(f) for f in frames])), array)


def test_a_plain_send_does_not_copy_the_tensor() -> None:
    array = np.zeros(1000, dtype=np.float32)
    payload = wire.tensor_frames(array, "x", 1, 1)[2]
    array[0] = 5.0  # the frame views the array's memory
    assert np.frombuffer(payload, dtype=np.float32)[0] == 5.0


@given(st.lists(st.integers(1, 5), min_size=0, max_size=4), st.sampled_from(DTYPES),
       st.text(max_size=30).filter(str.isprintable))
def test_any_shape_and_name_round_trip(shape: list[int], dtype: str, name: str) -> None:
    array = np.ones(shape, dtype=dtype)
    got = wire.unpack(wire.tensor_frames(array, name, 2**40, 2**31))
    assert got.header.name == name and wire.read_tensor(got).shape == tuple(shape)


def _frames() -> list[bytes]:
    return [bytes(f) for f in wire.tensor_frames(np.ones((2, 2), np.float32), "t", 1, 1)]


@pytest.mark.parametrize(("mangle", "words"), [
    (lambda f: f[:1], "frame"),
    (lambda f: [b"XXXX" + f[0][4:], *f[1:]], "header"),
    (lambda f: [f[0][:-1], *f[1:]], "header"),
    (lambda f: [f[0], b"meta!", *f[2:]], "meta"),
    (lambda f: [*f[:2], f[2][:-4]], "payload has 12 bytes, header says 16"),
])
def test_malformed_messages_raise_wire_errors_saying_what_is_wrong(mangle, words: str) -> None:
    with pytest.raises(WireError, match=words):
        wire.unpack(mangle(_frames()))


def test_a_payload_that_does_not_fit_its_shape_is_refused() -> None:
    header = wire.Header(wire.Kind.TENSOR, 1, 1, "t", "float32", (3, 3))
    with pytest.raises(WireError, match=r"16 payload bytes do not fit shape \[3, 3\] of float32 \(36 bytes\)"):
        wire.read_tensor(wire.unpack(wire.pack(header, b"", b"\0" * 16)))


def test_the_size_limit_is_checked_before_anything_is_decoded() -> None:
    with pytest.raises(WireError, match="declares 16 payload bytes, over this receiver's limit of 8"):
        wire.unpack(_frames(), wire.Limits(max_payload_bytes=8))


def test_a_name_with_control_characters_is_refused() -> None:
    frames = _frames()
    head = bytearray(frames[0])
    head[-5] = 0x1B  # the one-byte name "t" -> ESC (the codec "none" follows it)
    with pytest.raises(WireError, match="control characters"):
        wire.unpack([bytes(head), *frames[1:]])


@pytest.mark.parametrize("shape", [(0, 2**62), (2**31, 2**31), (2**41,)])
def test_a_shape_no_payload_could_fill_is_refused_before_any_allocation(shape: tuple[int, ...]) -> None:
    header = wire.Header(wire.Kind.TENSOR, 1, 1, "t", "float32", shape)
    with pytest.raises(WireError, match=r"dimension over|bytes once decoded|do not fit"):
        wire.read_tensor(wire.unpack(wire.pack(header, b"", b"")))


def test_a_codec_payload_claiming_more_than_the_limit_is_refused_before_decoding() -> None:
    header = wire.Header(wire.Kind.TENSOR, 1, 1, "t", "float32", (1 << 20, 1 << 10), "none+lz4")
    with pytest.raises(WireError, match="once decoded, over this receiver's limit"):
        wire.read_tensor(wire.unpack(wire.pack(header, b"", b"\x04\x22\x4d\x18")), wire.Limits(1 << 30))


def test_json_nested_past_the_depth_limit_is_refused_before_parsing() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    frames = wire.pack(wire.Header(wire.Kind.CONTROL, 0, 0, "x"), b"", b'{"op": ' + deep + b"}")
    with pytest.raises(WireError, match="nests 100001 deep, over the limit of 64"):
        wire.read_json(wire.unpack(frames))
    # brackets inside strings are text, not nesting
    text = wire.json_frames(wire.Kind.CONTROL, {"op": "[" * 500 + "\\\"{"})
    assert wire.read_json(wire.unpack(text))["op"].startswith("[[[")


def test_a_json_body_over_the_control_limit_is_refused() -> None:
    frames = wire.json_frames(wire.Kind.CONTROL, {"op": "x" * 2000})
    with pytest.raises(WireError, match="over this receiver's limit of 1000"):
        wire.unpack(frames, wire.Limits(max_control_bytes=1000))


@given(st.lists(st.binary(max_size=80), min_size=0, max_size=6))
def test_random_frames_raise_only_wire_errors(frames: list[bytes]) -> None:
    try:
        message = wire.unpack(frames)
        if message.header.kind is wire.Kind.TENSOR:
            wire.read_tensor(message)
        else:
            wire.read_json(message)
    except WireError:
        pass


def test_control_messages_are_json_not_pickle() -> None:
    frames = wire.json_frames(wire.Kind.CONTROL, {"op": "health", "n": 1})
    assert bytes(frames[2]) == b'{"op": "health", "n": 1}'
    assert wire.read_json(wire.unpack(frames)) == {"op": "health", "n": 1}
