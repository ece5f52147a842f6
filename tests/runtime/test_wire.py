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


def test_large_tensors_travel_in_bounded_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "CHUNK_BYTES", 1000)
    array = np.arange(1001, dtype=np.float32)  # 4004 bytes: five chunks, the last one 4 bytes
    frames = wire.tensor_frames(array, "x", 1, 1)
    assert [memoryview(f).nbytes for f in frames[2:]] == [1000, 1000, 1000, 1000, 4]
    assert np.array_equal(wire.read_tensor(wire.unpack([bytes(f) for f in frames])), array)


def test_a_plain_send_does_not_copy_the_tensor() -> None:
    array = np.zeros(1000, dtype=np.float32)
    payload = wire.tensor_frames(array, "x", 1, 1)[2]
    array[0] = 5.0  # the frame views the array's memory
    assert np.frombuffer(payload, dtype=np.float32)[0] == 5.0


@given(st.lists(st.integers(1, 5), min_size=0, max_size=4), st.sampled_from(DTYPES), st.text(max_size=30))
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
    with pytest.raises(WireError, match="declares 16 payload bytes, over this worker's limit of 8"):
        wire.unpack(_frames(), max_payload_bytes=8)


def test_control_messages_are_json_not_pickle() -> None:
    frames = wire.json_frames(wire.Kind.CONTROL, {"op": "health", "n": 1})
    assert bytes(frames[2]) == b'{"op": "health", "n": 1}'
    assert wire.read_json(wire.unpack(frames)) == {"op": "health", "n": 1}
