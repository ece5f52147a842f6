"""One outgoing link of a worker: a thread that owns a ZeroMQ socket to one peer and emulates the link.

Every value a worker sends to a peer goes through that peer's `LinkSender`: it encodes the value
with the link's codec, asks the `LinkShaper` when the message would arrive over the emulated link,
waits until then, and sends. One thread per link keeps messages in order, lets transfers overlap
computation (pipelining), and keeps each ZeroMQ socket in the one thread that uses it, as
ZeroMQ requires. On a secure worker the socket is a CURVE client of the receiver's key, and
tensors go in chunks so that encryption and decryption overlap (coinfer.runtime.wire).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coinfer.runtime import wire
from coinfer.runtime.security import KeyPair, connect_securely
from coinfer.shaping import LinkShaper

log = logging.getLogger(__name__)

_STOP = object()
KEPT_DELIVERIES = 10_000  # delivery times kept for the statistics (a long-running link stays bounded)
MAX_QUEUED_REPORTS = 1_000  # JSON reports waiting beyond this are dropped: a peer that floods a worker with
# bad frames, or a client that stops reading, must not make the worker's memory grow


@dataclass(frozen=True)
class LinkSecurity:
    """This worker's key pair, and the public key of the socket the link connects to."""

    keys: KeyPair
    server_key: bytes


@dataclass
class LinkStats:
    """What went over the link: messages, bytes on the wire and the time each took to deliver."""

    messages: int = 0
    wire_bytes: int = 0
    raw_bytes: int = 0
    dropped_reports: int = 0  # error and telemetry messages dropped while MAX_QUEUED_REPORTS waited
    delivery_s: deque[float] = field(default_factory=lambda: deque(maxlen=KEPT_DELIVERIES))


class LinkSender(threading.Thread):
    """Sends tensors and JSON messages to one address, in order, over an optional emulated link."""

    def __init__(self, context: Any, address: str, shaper: LinkShaper | None = None, codec: str = "none",
                 name: str = "link", sender: str = "", security: LinkSecurity | None = None) -> None:
        super().__init__(name=f"coinfer-{name}", daemon=True)
        self.sender = sender  # the device this worker plays
        self.context, self.address, self.shaper, self.codec = context, address, shaper, codec
        self.security = security
        self.chunk_bytes = wire.ENCRYPTED_CHUNK_BYTES if security is not None else None
        self.outbox: queue.Queue[Any] = queue.Queue()
        self.stats = LinkStats()
        self.lock = threading.Lock()

    def send_tensor(self, plan_version: int, request_id: int, name: str, array: np.ndarray,
                    codec: str | None = None) -> None:
        """Queue a tensor; `codec` is the sending plan's codec for this link (default the link's)."""
        self.outbox.put(("tensor", plan_version, request_id, name, array, codec or self.codec, time.monotonic()))

    def send_json(self, kind: wire.Kind, body: dict[str, Any], request_id: int = 0, plan_version: int = 0) -> None:
        if self.outbox.qsize() >= MAX_QUEUED_REPORTS:
            self.stats.dropped_reports += 1
            return
        self.outbox.put(("json", kind, body, request_id, plan_version, time.monotonic()))

    def stop(self) -> None:
        self.outbox.put(_STOP)

    def run(self) -> None:
        socket = peer_socket(self.context, self.address, self.sender, self.security)
        try:
            while (item := self.outbox.get()) is not _STOP:
                try:
                    self._deliver(socket, item)
                except Exception:  # a bad value must not kill the link; the error is logged with its name
                    log.exception("link to %s: could not send %s", self.address, item[3] if item[0] == "tensor" else "")
        finally:
            socket.close()

    def _deliver(self, socket: Any, item: tuple[Any, ...]) -> None:
        encode_start_s = time.monotonic()
        if item[0] == "tensor":
            _, version, request_id, name, array, codec, enqueued_s = item
            frames = wire.tensor_frames(array, name, request_id, version, codec, self.chunk_bytes)
            raw = int(array.nbytes)
        else:
            _, kind, body, request_id, version, enqueued_s = item
            frames = wire.json_frames(kind, body, request_id, version)
            raw = 0
        size = sum(memoryview(f).nbytes for f in frames)
        start_s = time.monotonic()
        if self.shaper is not None:
            # The message is ready when it was handed over plus its encoding time, not when this
            # thread got to it: a message waiting behind another's propagation delay is already
            # on the wire (the shaper's free_at keeps the order).
            ready_s = enqueued_s + (time.monotonic() - encode_start_s)
            arrive_s = self.shaper.arrival_s(ready_s, size)
            start_s = self.shaper.last_start_s
            wait = arrive_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        # the send time on the wall clock, so that the receiver can time the hop (wire.stamp)
        frames = wire.stamp(frames, time.time_ns() - int((time.monotonic() - start_s) * 1e9))
        socket.send_multipart(frames, copy=size < 65536)
        with self.lock:
            self.stats.messages += 1
            self.stats.wire_bytes += size
            self.stats.raw_bytes += raw
            self.stats.delivery_s.append(time.monotonic() - enqueued_s)


def peer_socket(context: Any, address: str, sender: str, security: LinkSecurity | None) -> Any:
    """A DEALER connected to a peer's data socket, with this worker's key and identity."""
    import zmq

    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 1000)
    if security is not None:
        connect_securely(socket, security.keys, security.server_key)
    if sender:  # the receiver names the source of each hop by this identity (`source_of`)
        socket.setsockopt(zmq.ROUTING_ID, f"{sender}#{uuid.uuid4().hex[:8]}".encode())
    socket.connect(address)
    return socket


def source_of(identity: bytes) -> str | None:
    """The device that sent a message, from the ZeroMQ identity its LinkSender connected with."""
    name, mark, _ = bytes(identity).partition(b"#")
    return name.decode(errors="replace") if mark and name else None
