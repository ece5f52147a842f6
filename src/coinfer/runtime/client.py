"""The coordinator: talks to workers' control sockets, streams weight blobs, sends requests, collects results.

The client plays the application on the origin device. It hands each request's inputs to the
origin worker's data socket (which forwards them over the emulated links like any value it
produced) and receives the outputs, and any worker's error reports, on its own ROUTER "sink"
socket. Control calls (health, deploy, activate, stats) are request/reply with a timeout, so a
worker that is down is named within seconds instead of hanging the run.

With `ClientSecurity` every socket is CURVE: the client connects to each worker's sockets with
that worker's public key and its own key pair, and its sink admits only the workers' keys.
"""

from __future__ import annotations

import copy
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coinfer.errors import UnreachableError, WireError, WorkerError
from coinfer.runtime import wire
from coinfer.runtime.blobs import CHUNK_BYTES, WINDOW
from coinfer.runtime.security import (
    AuthorizedKeys,
    Gate,
    KeyPair,
    connect_securely,
    serve_securely,
    start_authenticator,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientSecurity:
    """The client's key pair and each worker's public key, by device."""

    keys: KeyPair
    worker_keys: Mapping[str, bytes]


@dataclass
class Outcome:
    """One request: its outputs (or the errors workers reported) and its end-to-end latency.

    A request replayed after a device was lost keeps its id and `sent_s` (its latency includes the
    recovery) and moves to the new plan version, which is how its attempts are told apart."""

    request_id: int
    sent_s: float
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    latency_s: float | None = None
    plan_version: int | None = None  # the attempt: messages of any other version are stale (None: any)
    attempts: int = 1  # 1 + the times it was replayed on a new plan version after a device was lost

    @property
    def ok(self) -> bool:
        return self.latency_s is not None and not self.errors


class Client:
    """Talks to the workers of one run; `workers` maps device name -> the control endpoint."""

    def __init__(self, workers: Mapping[str, str], sink_host: str = "127.0.0.1", timeout_s: float = 10.0,
                 security: ClientSecurity | None = None) -> None:
        import zmq

        self.zmq = zmq
        self.workers = dict(workers)
        self.timeout_s = timeout_s
        self.security = security
        self.context: Any = zmq.Context()
        self.authenticator: Any = None
        if security is not None:
            missing = sorted(set(self.workers) - set(security.worker_keys))
            if missing:
                raise WorkerError(f"no public key for worker(s) {', '.join(missing)}; give their NAME.key files "
                                  "(--worker-keys DIR), or run every side with --insecure")
            gate = Gate(AuthorizedKeys(keys=security.worker_keys.values()))
            self.authenticator = start_authenticator(self.context, gate)
        self.sink = self.context.socket(zmq.ROUTER)
        self.sink.setsockopt(zmq.LINGER, 0)
        if security is not None:
            serve_securely(self.sink, security.keys, "data")
        self.sink.bind(f"tcp://{sink_host}:0")
        self.sink_endpoint: str = self.sink.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sink_port = int(self.sink_endpoint.rsplit(":", 1)[1])
        self.control: dict[str, Any] = {d: self._dealer(d, e) for d, e in self.workers.items()}
        self.data: dict[str, Any] = {}  # device -> DEALER to its data socket (connect_data)
        self.stray_errors: list[dict[str, Any]] = []
        # per-request reports of workers deployed with telemetry on, by (plan version, request id)
        self.telemetry: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self.probes: list[dict[str, Any]] = []  # hops of two-point link probes, as receivers timed them
        self.late_outputs = 0  # outputs of requests already finished: a request computed twice shows here
        self.stale_messages = 0  # outputs and errors of an earlier attempt of a replayed request, dropped
        self.unreachable: set[str] = set()  # workers known to be down: cancels and undeploys skip them

    @property
    def public_key(self) -> str | None:
        return None if self.security is None else self.security.keys.public.decode()

    def worker_key(self, device: str) -> str | None:
        return None if self.security is None else self.security.worker_keys[device].decode()

    def side_channel(self) -> Client:
        """A client for one other thread (a deployment in the background): the same keys, sink and
        data sockets, and control sockets of its own, opened in the thread that calls this. Close it
        with `close_side_channel`."""
        other = copy.copy(self)
        other.control = {d: self._dealer(d, e) for d, e in self.workers.items()}
        return other

    def close_side_channel(self) -> None:
        for sock in self.control.values():
            sock.close(linger=0)

    def control_connection(self, device: str) -> Any:
        """A new DEALER to `device`'s control socket, with this client's keys, for another thread's
        own use (coinfer.runtime.watchdog); the caller closes it."""
        return self._dealer(device, self.workers[device])

    def _dealer(self, device: str, endpoint: str) -> Any:
        sock = self.context.socket(self.zmq.DEALER)
        sock.setsockopt(self.zmq.LINGER, 0)
        if self.security is not None:
            connect_securely(sock, self.security.keys, self.security.worker_keys[device])
        sock.connect(endpoint)
        return sock

    def connect_data(self, device: str, endpoint: str) -> None:
        """Open the socket requests' inputs go to (the device's data socket, as its health reply names it)."""
        if device not in self.data:
            self.data[device] = self._dealer(device, endpoint)

    def close(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
        self.context.destroy(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control ----------------------------------------------------------------------------

    def call(self, device: str, body: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """Send a control message to one worker and wait for its reply."""
        self.control[device].send_multipart(wire.json_frames(wire.Kind.CONTROL, body))
        return self._reply(device, str(body.get("op")), timeout_s)

    def _reply(self, device: str, what: str, timeout_s: float | None = None) -> dict[str, Any]:
        sock = self.control[device]
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        if not sock.poll(int(wait_s * 1000)):
            # A DEALER that timed out would pair the late reply with the next call: replace it.
            sock.close()
            self.control[device] = self._dealer(device, self.workers[device])
            keys = (" and does it hold this client's public key (and this client its key)?"
                    if self.security is not None else "; if it was started with keys, give them here too")
            raise UnreachableError(f"worker {device!r} at {self.workers[device]} did not answer {what!r} within "
                                   f"{wait_s:g} s; is it running (coinfer worker --listen ... --name {device}){keys}",
                                   device)
        return wire.read_json(wire.unpack(sock.recv_multipart(copy=False)))

    def check(self, device: str, body: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        reply = self.call(device, body, timeout_s)
        if not reply.get("ok"):
            raise WorkerError(f"worker {device!r} refused {body.get('op')!r}: {reply.get('error')}")
        return reply

    def send_blobs(self, device: str, plan_version: int, shas: list[str], blob_bytes: Callable[[str], bytes],
                   labels: Mapping[str, str], timeout_s: float, progress: Callable[[int], None] | None = None) -> int:
        """Stream blobs to a worker in chunks, at most `WINDOW` unacknowledged; the bytes sent."""
        sock, outstanding, sent = self.control[device], 0, 0

        def acknowledged() -> None:
            reply = self._reply(device, "blob chunk", timeout_s)
            if not reply.get("ok"):
                name = labels.get(str(reply.get("sha256")), "a weight blob")
                raise WorkerError(f"worker {device!r} refused {name}: {reply.get('error')}")

        for sha in shas:
            data = memoryview(blob_bytes(sha))
            for offset in range(0, max(1, data.nbytes), CHUNK_BYTES):
                chunk = data[offset : offset + CHUNK_BYTES]
                header = wire.Header(wire.Kind.BLOB, plan_version, 0, sha, "uint8", (offset, data.nbytes))
                while outstanding >= WINDOW:
                    acknowledged()
                    outstanding -= 1
                sock.send_multipart(wire.pack(header, b"", chunk), copy=chunk.nbytes < 65536)
                outstanding += 1
                sent += chunk.nbytes
                if progress is not None:
                    progress(chunk.nbytes)
        while outstanding:
            acknowledged()
            outstanding -= 1
        return sent

    def cancel(self, plan_version: int, request_id: int) -> None:
        """Tell every worker to forget a failed request (its partial state would otherwise stay)."""
        for device in [d for d in self.workers if d not in self.unreachable]:
            try:
                self.call(device, {"op": "cancel", "plan_version": plan_version, "request_id": request_id}, 2.0)
            except WorkerError as exc:
                log.warning("could not cancel request %d on %s: %s", request_id, device, exc)

    # -- requests ---------------------------------------------------------------------------

    def submit(self, origin: str, plan_version: int, request_id: int, inputs: Mapping[str, np.ndarray]) -> None:
        sock = self.data.get(origin)
        if sock is None:
            raise WorkerError(f"no data connection to the origin {origin!r}; deploy a plan first")
        chunk = wire.ENCRYPTED_CHUNK_BYTES if self.security is not None else None
        for name, array in inputs.items():
            frames = wire.tensor_frames(np.ascontiguousarray(array), name, request_id, plan_version, chunk_bytes=chunk)
            sock.send_multipart(frames, copy=array.nbytes < 65536)

    def collect(self, pending: dict[int, Outcome], output_names: tuple[str, ...], timeout_s: float) -> list[Outcome]:
        """Wait up to `timeout_s` for messages on the sink; the requests they finish, each taken out of
        `pending`, so that a request is answered once. A message of another plan version than its
        request's attempt is dropped (`stale_messages`)."""
        done: list[Outcome] = []
        if not self.sink.poll(int(timeout_s * 1000)):
            return done
        while self.sink.poll(0):
            _, *frames = self.sink.recv_multipart(copy=False)
            now = time.perf_counter()
            try:
                message = wire.unpack(frames)
                outcome = pending.get(message.header.request_id)
                if message.header.kind is wire.Kind.CONTROL:
                    self._telemetry(message)
                    continue
                if outcome is not None and outcome.plan_version not in (None, message.header.plan_version):
                    self.stale_messages += 1  # an earlier attempt's answer (the device was presumed lost)
                    continue
                if message.header.kind is wire.Kind.ERROR:
                    report = wire.read_json(message)
                    (outcome.errors if outcome else self.stray_errors).append(report)
                    if outcome is not None:
                        done.append(pending.pop(outcome.request_id))
                    continue
                if outcome is None:
                    self.late_outputs += 1  # a late output of a request that already failed or finished
                    continue
                outcome.outputs[message.header.name] = wire.read_tensor(message).copy()
            except WireError as exc:  # a broken frame on the sink is logged, never fatal
                log.warning("client: dropped a malformed message: %s", exc)
                continue
            if all(n in outcome.outputs for n in output_names):
                outcome.latency_s = now - outcome.sent_s
                done.append(pending.pop(outcome.request_id))
        return done

    def _telemetry(self, message: wire.Message) -> None:
        body = wire.read_json(message)
        if body.get("op") != "telemetry":
            return
        if "probe" in body:
            self.probes.append(body["probe"])
        else:
            key = (message.header.plan_version, message.header.request_id)
            self.telemetry.setdefault(key, []).append(body)


def facing_ip(endpoint: str) -> str:
    """This machine's address on the route to `endpoint` (what a remote worker can connect back to)."""
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))  # UDP connect sends nothing; it only picks the route
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
