"""The worker's I/O thread: it owns the two listening sockets and never waits on anything else.

- The **control** socket (`--listen`) takes control ops and the chunks of weight blobs from
  authorised clients, and answers them (coinfer.runtime.worker.control). Deploy work goes to the
  preparer thread, whose replies come back over an in-process socket for this thread to send.
- The **data** socket (the control port + 1 unless given) takes tensors from peers and from the
  client. It is read only while the compute thread's inbox has room (`--inbox`): when it is full
  this thread stops reading it, and ZeroMQ's high-water marks push back on the senders, while
  control messages (health, cancel) are still answered.

Every message is checked before it is used (coinfer.runtime.wire): a malformed one, or one from
a key that may not send it, is dropped with an error to the client and a log line, and serving
goes on. On a secure worker the sender of every message is the key it came with (its ZeroMQ
User-Id), which the gate maps to a client or to the peer device a deployment names.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from coinfer.errors import CoinferError, WireError
from coinfer.runtime import wire
from coinfer.runtime.blobs import CHUNK_BYTES
from coinfer.runtime.links import source_of
from coinfer.runtime.routing import CLIENT
from coinfer.runtime.security import Domain, Gate, sender_key, serve_securely, start_authenticator
from coinfer.runtime.worker.blob_cache import BlobCache
from coinfer.runtime.worker.compute import Arrival, Compute
from coinfer.runtime.worker.config import WorkerConfig
from coinfer.runtime.worker.control import LATER, PROBE, Control
from coinfer.runtime.worker.keepalive import KEEPALIVE
from coinfer.runtime.worker.outgoing import Outgoing
from coinfer.runtime.worker.preparing import ChunkJob, Preparer
from coinfer.runtime.worker.resident import ResidentWeights

log = logging.getLogger(__name__)

KEPT_ERRORS = 100
MAX_HEARD = 1024  # peers whose last message a heartbeat reports
FRAME_SLACK_BYTES = 1 << 16  # a header and a meta frame beside the largest payload
HARD_FRAME_FLOOR_BYTES = 16 << 20


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        import zmq

        self.config, self.zmq = config, zmq
        self.context: Any = zmq.Context()
        self.gate: Gate | None = None
        self.authenticator: Any = None
        if config.keys is not None:
            assert config.authorized is not None
            self.gate = Gate(config.authorized)
            self.authenticator = start_authenticator(self.context, self.gate)
        limits = config.limits
        self.control_socket = self._socket("control", max(limits.max_control_bytes, CHUNK_BYTES))
        # A frame over the payload limit gets an error naming it; only one over MAXMSGSIZE makes ZeroMQ
        # drop the connection (and what was queued on it), so that cap sits well above small limits.
        self.data_socket = self._socket("data", max(limits.max_payload_bytes, HARD_FRAME_FLOOR_BYTES))
        self.data_socket.setsockopt(zmq.RCVHWM, config.inbox_size)
        self.control_socket.bind(config.listen)
        self.endpoint: str = self.control_socket.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.data_socket.bind(config.data_listen or _next_port(config.listen))
        self.data_endpoint: str = self.data_socket.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.replies = self.context.socket(zmq.PULL)
        self.replies.bind(f"inproc://coinfer-replies-{id(self)}")
        self.stopping = threading.Event()
        self.errors: deque[str] = deque(maxlen=KEPT_ERRORS)
        self.heard: dict[str, float] = {}  # peer device -> time.monotonic() of its last data message
        self.tensor_slots = threading.Semaphore(config.inbox_size)
        self.outgoing = Outgoing(self.context, config.name, config.keys)
        self.resident = ResidentWeights()
        self.preparer: Preparer
        self.compute = Compute(config.name, self.outgoing, self.report, lambda v: self.preparer.released(v),
                               self.tensor_slots)
        self.preparer = Preparer(config, BlobCache(config.cache_dir, config.cache_bytes), self.resident,
                                 self.compute, self.outgoing, self.gate, self._reply_later())
        self.control = Control(config, self.compute, self.preparer, self.outgoing, self.stopping,
                               int(self.data_endpoint.rsplit(":", 1)[1]), lambda: list(self.errors), self._heard_s)

    def _socket(self, domain: Domain, max_frame_bytes: int) -> Any:
        zmq = self.zmq
        sock = self.context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # ZeroMQ drops a peer that sends a frame over this before the frame is held in memory
        sock.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes + FRAME_SLACK_BYTES)
        # a peer that reconnects (a restarted worker) takes over its identity instead of being refused
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.config.keys is not None:
            serve_securely(sock, self.config.keys, domain)
        return sock

    def _reply_later(self) -> Any:
        """The preparer's way to answer: a PUSH socket of its own thread, to this thread's PULL."""
        local = threading.local()

        def reply(identity: Any, body: dict[str, Any]) -> None:
            if not hasattr(local, "push"):
                local.push = self.context.socket(self.zmq.PUSH)
                local.push.setsockopt(self.zmq.LINGER, 0)
                local.push.connect(f"inproc://coinfer-replies-{id(self)}")
            local.push.send_multipart([identity, *wire.json_frames(wire.Kind.CONTROL, body)])
        return reply

    # -- the loop ---------------------------------------------------------------------------

    def serve_forever(self) -> None:
        zmq = self.zmq
        self.compute.start()
        self.preparer.start()
        poller = zmq.Poller()
        poller.register(self.control_socket, zmq.POLLIN)
        poller.register(self.replies, zmq.POLLIN)
        reading_data = False
        try:
            while not self.stopping.is_set():
                slot = self.tensor_slots.acquire(blocking=False)  # room in the inbox: read the data socket
                if slot and not reading_data:
                    poller.register(self.data_socket, zmq.POLLIN)
                elif not slot and reading_data:
                    poller.unregister(self.data_socket)
                reading_data = slot
                # while the inbox is full, look again soon: the compute thread frees a slot per tensor
                ready = dict(poller.poll(100 if slot else 5))
                if self.replies in ready:
                    self.control_socket.send_multipart(self.replies.recv_multipart(), copy=False)
                if self.control_socket in ready:
                    self._on_control(self.control_socket.recv_multipart(copy=False))
                queued = False
                if reading_data and self.data_socket in ready:
                    queued = self._on_data(self.data_socket.recv_multipart(copy=False))
                if slot and not queued:
                    self.tensor_slots.release()
        finally:
            self.stopping.set()
            self.preparer.stop()
            self.compute.stop()
            self.outgoing.stop()
            if self.authenticator is not None:
                self.authenticator.stop()
            # destroy, not term: the preparer's reply socket belongs to its (finished) thread
            self.context.destroy(linger=0)

    def _on_control(self, frames: list[Any]) -> None:
        identity, *rest = frames
        if not rest:
            return
        if self.gate is not None:
            key = sender_key(rest[0])
            if key is None or not self.gate.is_client(key):
                log.warning("%s: dropped a control message from a key that is not (or no longer) authorised",
                            self.config.name)
                return self._answer(identity, {"ok": False, "error": "this client key is not authorised here"})
        try:
            message = wire.unpack(rest, self.config.limits)
            if message.header.kind is wire.Kind.BLOB:
                job = ChunkJob(identity.bytes, message.header, message.payload)
                if not self.preparer.offer(job):
                    self._answer(identity, {"ok": False, "busy": True, "sha256": message.header.name,
                                            "error": "the worker is busy writing blobs; send this chunk again"})
                return
            body = wire.read_json(message, self.config.limits)
        except WireError as exc:
            log.warning("%s: dropped a control message: %s", self.config.name, exc)
            return self._answer(identity, {"ok": False, "error": str(exc)})
        reply = self.control.handle(identity.bytes, body)
        if reply is not LATER:
            self._answer(identity, reply)

    def _answer(self, identity: Any, body: dict[str, Any]) -> None:
        self.control_socket.send_multipart([identity, *wire.json_frames(wire.Kind.CONTROL, body)])

    def _on_data(self, frames: list[Any]) -> bool:
        """Check one data message and queue its tensor; True when queued (it then holds an inbox slot)."""
        identity, *rest = frames
        header = None
        try:
            message = wire.unpack(rest, self.config.limits)
            header = message.header
            if header.kind is not wire.Kind.TENSOR:
                raise WireError(f"{header.describe()}: the data socket carries tensors only")
            source = self._source(identity, rest[0], header.plan_version)
            if source is not None and source != CLIENT and (source in self.heard or len(self.heard) < MAX_HEARD):
                self.heard[source] = time.monotonic()  # bounded: a plain worker's peers name themselves
            if header.plan_version == 0 and header.name == KEEPALIVE:
                return False
            hop = self._hop(source, header)
            if header.plan_version == 0 and header.name == PROBE:
                if hop is not None:
                    self.outgoing.to_client(wire.Kind.CONTROL, {"op": "telemetry", "probe": hop})
                return False
            array = wire.read_tensor(message, self.config.limits)
            if not self.compute.alive:
                raise WireError(self.compute.failure or f"the compute thread of {self.config.name} is not running")
            self.compute.put(Arrival(header, array, hop, source))
            return True
        except CoinferError as exc:  # WireError, and CodecError for an unknown codec name in a header
            header = getattr(exc, "header", header)
            kind = {"kind": wire.NOT_DEPLOYED} if isinstance(exc, NotDeployedError) else {}
            if header is None:
                self.report(str(exc))
            else:
                self.report(str(exc), header.request_id, header.plan_version, **kind)
            return False

    def _heard_s(self) -> dict[str, float]:
        """Seconds since each peer's last data message (its keepalives count): a link's liveness."""
        now = time.monotonic()
        return {device: now - at for device, at in list(self.heard.items())}

    def _source(self, identity: Any, frame: Any, plan_version: int) -> str | None:
        """The sending device (CLIENT for a client) by its key; on a plain worker, by what it claims."""
        if self.gate is None:
            return source_of(identity.bytes)
        key = sender_key(frame)
        if key is not None and self.gate.is_client(key):
            return CLIENT
        device = self.gate.peer_device(plan_version, key) if key is not None else None
        if device is None and plan_version == 0:
            device = self.gate.any_peer_device(key) if key is not None else None
        if device is None:
            raise NotDeployedError(f"a tensor of plan version {plan_version} came from a key that deployment does "
                                   "not name (or this worker does not hold that version)")
        return device

    def _hop(self, source: str | None, header: wire.Header) -> dict[str, Any] | None:
        """The hop that brought a message: its source device, wire bytes and transfer time."""
        if source is None or source == CLIENT or not header.sent_unix_ns:
            return None  # from the client, or a sender that does not stamp
        size = header.payload_bytes + header.meta_bytes
        return {"source": source, "target": self.config.name, "size_bytes": size,
                "seconds": max(0.0, (time.time_ns() - header.sent_unix_ns) / 1e9), "at_unix_s": time.time()}

    def report(self, error: str, request_id: int = 0, plan_version: int = 0, **fields: Any) -> None:
        log.warning("%s: %s", self.config.name, error)
        self.errors.append(error)
        body = {"worker": self.config.name, "error": error, "request_id": request_id, **fields}
        self.outgoing.to_client(wire.Kind.ERROR, body, request_id, plan_version)


class NotDeployedError(WireError):
    """A tensor of a plan version this worker does not hold, or from a key that version does not name."""


def _next_port(endpoint: str) -> str:
    """The data socket's address: the control socket's host, its port + 1 (any free port for port 0)."""
    host, _, port = endpoint.rpartition(":")
    return f"{host}:{int(port) + 1}" if int(port) else f"{host}:0"
