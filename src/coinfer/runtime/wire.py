"""Frames on the wire: a fixed binary header, then codec metadata, then raw bytes; every field checked.

A message is a ZeroMQ multipart message `[header, meta, payload, ...]`; nothing on the wire is
pickled. The header (little-endian, `HEADER`, 42 bytes, then the variable parts) is:

    magic "CNF3" | kind u8 | dtype u8 | ndim u8 | codec length u8 | name length u16 |
    plan version u32 | request id u64 | payload bytes u64 | meta bytes u32 | sent unix ns u64 |
    shape (ndim x u64) | name (utf-8) | codec (ascii, e.g. "none", "fp16+lz4")

`sent unix ns` is when the sender started to transmit (wall clock, 0 when unknown): the receiver
measures each hop's transfer time from the traffic itself (coinfer.adapt's estimates), which
needs the two clocks to agree (one machine, or NTP across machines).

`kind` says what the payload is: a tensor (its bytes, encoded by the codec), a control message or
an error (both UTF-8 JSON, dtype "none"), or a chunk of a weight blob (coinfer.runtime.blobs: the
name is the blob's sha256, the shape is `(offset, total bytes)`).

The payload is one frame, sent as a zero-copy view of the array (so the receiver reads it in
place, as a raw socket would), or, on an encrypted link, several frames of `chunk_bytes`: CURVE
encrypts frame by frame, so chunks let the sender encrypt one while the receiver decrypts the one
before (measured in docs/security.md). The receiver joins them.

`Limits` are what a receiver accepts, and every one is checked before anything is allocated or
decoded: the frame count, the header's lengths, a tensor's declared elements against its payload
and against the payload limit (so a shape of (0, 2^62) or a codec claiming a gigabyte cannot make
the receiver allocate it), the name's text, and a JSON body's size and nesting depth.
"""

from __future__ import annotations

import enum
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from coinfer.errors import WireError

MAGIC = b"CNF3"
HEADER = struct.Struct("<4sBBBBHIQQIQ")
SENT_OFFSET = HEADER.size - 8  # where `sent unix ns` sits in the header
MAX_META_BYTES = 1 << 20
MAX_NDIM = 16
MAX_NAME_BYTES = 512
MAX_DIM = 1 << 40  # no dimension of a real tensor comes near it; bigger ones are refused before any arithmetic
MAX_FRAMES = 4096  # header, meta and payload chunks of one message
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 30  # 1 GiB: far above any activation, far below the machine's memory
DEFAULT_MAX_CONTROL_BYTES = 64 << 20  # a deploy message carries a plan and a program: megabytes, not more
DEFAULT_MAX_JSON_DEPTH = 64  # plans and programs nest about ten deep
ENCRYPTED_CHUNK_BYTES = 1 << 20  # the chunk that let CURVE pipeline best (docs/security.md)

# Index = wire code; appending keeps old codes valid.
DTYPES = ("none", "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


NOT_DEPLOYED = "not-deployed"  # an error report's kind: the worker lacks the plan version (it restarted)

class Kind(enum.IntEnum):
    TENSOR = 1
    CONTROL = 2
    ERROR = 3
    BLOB = 4


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts (see the module docstring)."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_control_bytes: int = DEFAULT_MAX_CONTROL_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Header:
    kind: Kind
    plan_version: int
    request_id: int
    name: str
    dtype: str = "none"
    shape: tuple[int, ...] = ()
    codec: str = "none"
    payload_bytes: int = 0
    meta_bytes: int = 0
    sent_unix_ns: int = 0

    def describe(self) -> str:
        return f"{self.kind.name.lower()} {self.name!r} of request {self.request_id} (plan version {self.plan_version})"


@dataclass(frozen=True)
class Message:
    header: Header
    meta: memoryview
    payload: memoryview


def pack(header: Header, meta: bytes | memoryview, payload: bytes | memoryview,
         chunk_bytes: int | None = None) -> list[bytes | memoryview]:
    """The frames of one message; `payload` is one frame, or cut into `chunk_bytes` views (no copy)."""
    name, codec = header.name.encode(), header.codec.encode("ascii")
    if len(header.shape) > MAX_NDIM or len(name) > MAX_NAME_BYTES or len(codec) > 0xFF:
        raise WireError(f"cannot send {header.describe()}: shape, name or codec too long")
    view = memoryview(payload).cast("B")
    fixed = HEADER.pack(MAGIC, header.kind, DTYPES.index(header.dtype), len(header.shape), len(codec), len(name),
                        header.plan_version, header.request_id, view.nbytes, len(meta), header.sent_unix_ns)
    head = fixed + struct.pack(f"<{len(header.shape)}Q", *header.shape) + name + codec
    if chunk_bytes is None or view.nbytes <= chunk_bytes:
        return [head, meta, view]
    return [head, meta, *(view[i : i + chunk_bytes] for i in range(0, view.nbytes, chunk_bytes))]


def unpack(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse and check one message; a malformed or oversized one raises WireError saying how."""
    if not 3 <= len(frames) <= MAX_FRAMES:
        raise WireError(f"malformed message: {len(frames)} frame(s), expected a header, a meta frame and a payload "
                        f"(at most {MAX_FRAMES} frames)")
    header = read_header(memoryview(frames[0]).tobytes())
    try:
        return _body(header, frames, limits)
    except WireError as exc:
        exc.header = header  # type: ignore[attr-defined]  # lets the receiver name the request
        raise


def _body(header: Header, frames: Sequence[Any], limits: Limits) -> Message:
    limit = limits.max_payload_bytes if header.kind in (Kind.TENSOR, Kind.BLOB) else limits.max_control_bytes
    if header.payload_bytes > limit:
        raise WireError(f"{header.describe()} declares {header.payload_bytes} payload bytes, over this receiver's "
                        f"limit of {limit}; raise --max-message-bytes or send less")
    meta = memoryview(frames[1]).cast("B")
    if meta.nbytes != header.meta_bytes:
        raise WireError(f"{header.describe()}: meta frame has {meta.nbytes} bytes, header says {header.meta_bytes}")
    chunks = [memoryview(f).cast("B") for f in frames[2:]]
    got = sum(c.nbytes for c in chunks)
    if got != header.payload_bytes:
        raise WireError(f"{header.describe()}: payload has {got} bytes, header says {header.payload_bytes}")
    payload = chunks[0] if len(chunks) == 1 else memoryview(b"".join(chunks))
    return Message(header, meta, payload)


def read_header(raw: bytes) -> Header:
    if len(raw) < HEADER.size or raw[:4] != MAGIC:
        raise WireError(f"malformed message: the header does not start with {MAGIC!r} or is shorter than "
                        f"{HEADER.size} bytes ({len(raw)} bytes came); is the sender a coinfer worker of this version?")
    _, kind, dtype, ndim, codec_len, name_len, version, request, payload, meta, sent = HEADER.unpack_from(raw)
    if (kind not in Kind._value2member_map_ or dtype >= len(DTYPES) or ndim > MAX_NDIM or meta > MAX_META_BYTES
            or name_len > MAX_NAME_BYTES):
        raise WireError(f"malformed header: kind {kind}, dtype code {dtype}, ndim {ndim}, meta {meta} bytes, "
                        f"name {name_len} bytes")
    end = HEADER.size + 8 * ndim + name_len + codec_len
    if len(raw) != end:
        raise WireError(f"malformed header: {len(raw)} bytes, its fields need {end}")
    shape = struct.unpack_from(f"<{ndim}Q", raw, HEADER.size)
    if any(d > MAX_DIM for d in shape):
        raise WireError(f"malformed header: shape {list(shape)} has a dimension over {MAX_DIM}")
    at = HEADER.size + 8 * ndim
    try:
        name = raw[at : at + name_len].decode()
        codec = raw[at + name_len : end].decode("ascii")
    except UnicodeDecodeError:
        raise WireError("malformed header: the tensor name or codec is not valid text") from None
    if not (name.isprintable() and codec.isprintable()):
        raise WireError(f"malformed header: the name {name!r} or codec {codec!r} holds control characters")
    return Header(Kind(kind), version, request, name, DTYPES[dtype], tuple(shape), codec, payload, meta, sent)


def stamp(frames: list[bytes | memoryview], sent_unix_ns: int) -> list[bytes | memoryview]:
    """`frames` with the header's send time set (the sender knows it only once the link is free)."""
    head = bytearray(frames[0])
    struct.pack_into("<Q", head, SENT_OFFSET, sent_unix_ns)
    return [bytes(head), *frames[1:]]


# -- tensors ------------------------------------------------------------------------------------


def tensor_frames(array: np.ndarray, name: str, request_id: int, plan_version: int,
                  codec: str = "none", chunk_bytes: int | None = None) -> list[bytes | memoryview]:
    """The frames carrying `array` (any C-contiguous numpy array of a DTYPES type)."""
    dtype = str(array.dtype)
    if dtype not in DTYPES:
        raise WireError(f"tensor {name!r} has dtype {dtype}, which the wire does not carry; supported: {DTYPES[1:]}")
    if codec == "none":  # the identity codec, kept here so a plain send never copies
        meta: bytes | memoryview = b""
        payload: bytes | memoryview = np.ascontiguousarray(array).data.cast("B")
    else:
        from coinfer.codec_model import parse_codec
        from coinfer.runtime.codec import encode

        encoded = encode(np.ascontiguousarray(array), parse_codec(codec))
        meta, payload = encoded.meta, encoded.payload
    header = Header(Kind.TENSOR, plan_version, request_id, name, dtype, tuple(int(d) for d in array.shape), codec)
    return pack(header, meta, payload, chunk_bytes)


def read_tensor(message: Message, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """The array a TENSOR message carries (read-only when it views the received frame)."""
    h = message.header
    if h.kind is not Kind.TENSOR or h.dtype == "none":
        raise WireError(f"{h.describe()} carries no tensor")
    if h.dtype == "bfloat16":
        raise WireError(f"{h.describe()} is bfloat16, which numpy cannot hold; send it as float32")
    expected = prod(h.shape) * np.dtype(h.dtype).itemsize  # Python ints: no overflow
    if expected > limits.max_payload_bytes:
        raise WireError(f"{h.describe()} declares shape {list(h.shape)} of {h.dtype}, {expected} bytes once decoded, "
                        f"over this receiver's limit of {limits.max_payload_bytes}")
    if h.codec == "none":
        if message.payload.nbytes != expected:
            raise WireError(f"{h.describe()}: {message.payload.nbytes} payload bytes do not fit shape {list(h.shape)} "
                            f"of {h.dtype} ({expected} bytes)")
        return np.frombuffer(message.payload, dtype=h.dtype).reshape(h.shape)
    from coinfer.codec_model import parse_codec
    from coinfer.runtime.codec import decode

    try:
        return decode(message.meta, message.payload, h.dtype, h.shape, parse_codec(h.codec))
    except WireError as exc:
        exc.header = h  # type: ignore[attr-defined]
        raise


# -- control and error messages -----------------------------------------------------------------


def json_frames(kind: Kind, body: dict[str, Any], request_id: int = 0, plan_version: int = 0,
                name: str = "") -> list[bytes | memoryview]:
    data = json.dumps(body, allow_nan=False, default=str).encode()
    label = name or str(body.get("op", kind.name.lower()))
    return pack(Header(kind, plan_version, request_id, label[:MAX_NAME_BYTES]), b"", data)


def read_json(message: Message, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    h = message.header
    if h.kind not in (Kind.CONTROL, Kind.ERROR):
        raise WireError(f"{h.describe()} is a {h.kind.name.lower()}, not a control message")
    data = bytes(message.payload)
    if len(data) > limits.max_control_bytes:
        raise WireError(f"{h.describe()}: a JSON body of {len(data)} bytes, over the limit of "
                        f"{limits.max_control_bytes}")
    depth = json_depth(data)
    if depth > limits.max_json_depth:
        raise WireError(f"{h.describe()}: the JSON body nests {depth} deep, over the limit of {limits.max_json_depth}")
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WireError(f"{h.describe()}: the JSON body does not parse ({exc})") from None
    if not isinstance(body, dict):
        raise WireError(f"{h.describe()}: the JSON body is not an object")
    return body


# A JSON string, written so the regex runs in linear time: non-special characters, then escapes.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def json_depth(data: bytes) -> int:
    """How deep the brackets of a JSON text nest, outside its strings (before parsing it at all)."""
    bare = _JSON_STRING.sub(b'""', data)
    steps = _OPEN[np.frombuffer(bare, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))
