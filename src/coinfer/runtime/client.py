"""The coordinator: deploys a plan to workers, sends requests, collects results and errors.

The client plays the application on the origin device. It hands each request's inputs to the
origin's worker (which forwards them over the emulated links like any value it produced) and
receives the outputs, and any worker's error reports, on its own ROUTER "sink" socket. Control
calls (deploy, stats, health) are request/reply with a timeout, so a worker that is down is named
within seconds instead of hanging the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coinfer.errors import WorkerError
from coinfer.runtime import wire

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """One request: its outputs (or the errors workers reported) and its end-to-end latency."""

    request_id: int
    sent_s: float
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    latency_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.latency_s is not None and not self.errors


class Client:
    """Talks to the workers of one run; `workers` maps device name -> ZeroMQ endpoint."""

    def __init__(self, workers: Mapping[str, str], sink_host: str = "127.0.0.1", timeout_s: float = 10.0) -> None:
        import zmq

        self.zmq = zmq
        self.workers = dict(workers)
        self.timeout_s = timeout_s
        self.context: Any = zmq.Context.instance()
        self.sink = self.context.socket(zmq.ROUTER)
        self.sink.setsockopt(zmq.LINGER, 0)
        self.sink.bind(f"tcp://{sink_host}:0")
        self.sink_endpoint: str = self.sink.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.sink_port = int(self.sink_endpoint.rsplit(":", 1)[1])
        self.control: dict[str, Any] = {}
        for device, endpoint in self.workers.items():
            sock = self.context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            self.control[device] = sock
        self.stray_errors: list[dict[str, Any]] = []
        # per-request reports of workers deployed with telemetry on, by (plan version, request id)
        self.telemetry: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self.probes: list[dict[str, Any]] = []  # hops of two-point link probes, as receivers timed them
        self.late_outputs = 0  # outputs of requests already finished: a request computed twice shows here

    def close(self) -> None:
        for sock in [*self.control.values(), self.sink]:
            sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control ----------------------------------------------------------------------------

    def call(self, device: str, body: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """Send a control message to one worker and wait for its reply."""
        sock = self.control[device]
        sock.send_multipart(wire.json_frames(wire.Kind.CONTROL, body))
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        if not sock.poll(int(wait_s * 1000)):
            # A DEALER that timed out would pair the late reply with the next call: replace it.
            sock.close()
            fresh = self.context.socket(self.zmq.DEALER)
            fresh.setsockopt(self.zmq.LINGER, 0)
            fresh.connect(self.workers[device])
            self.control[device] = fresh
            raise WorkerError(f"worker {device!r} at {self.workers[device]} did not answer {body.get('op')!r} within "
                              f"{wait_s:g} s; is it running (coinfer worker --listen ... --name {device})?")
        reply = wire.read_json(wire.unpack(sock.recv_multipart(copy=False)))
        return reply

    def check(self, device: str, body: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        reply = self.call(device, body, timeout_s)
        if not reply.get("ok"):
            raise WorkerError(f"worker {device!r} refused {body.get('op')!r}: {reply.get('error')}")
        return reply

    def cancel(self, plan_version: int, request_id: int) -> None:
        """Tell every worker to forget a failed request (its partial state would otherwise stay)."""
        for device in self.workers:
            try:
                self.call(device, {"op": "cancel", "plan_version": plan_version, "request_id": request_id}, 2.0)
            except WorkerError as exc:
                log.warning("could not cancel request %d on %s: %s", request_id, device, exc)

    # -- requests ---------------------------------------------------------------------------

    def submit(self, origin: str, plan_version: int, request_id: int, inputs: Mapping[str, np.ndarray]) -> None:
        sock = self.control[origin]
        for name, array in inputs.items():
            sock.send_multipart(wire.tensor_frames(np.ascontiguousarray(array), name, request_id, plan_version),
                                copy=array.nbytes < 65536)

    def collect(self, pending: dict[int, Outcome], output_names: tuple[str, ...], timeout_s: float) -> list[Outcome]:
        """Wait up to `timeout_s` for messages on the sink; the requests they finish."""
        done: list[Outcome] = []
        if not self.sink.poll(int(timeout_s * 1000)):
            return done
        while self.sink.poll(0):
            _, *frames = self.sink.recv_multipart(copy=False)
            now = time.perf_counter()
            try:
                message = wire.unpack(frames)
            except Exception as exc:  # a broken frame on the sink is logged, never fatal
                log.warning("client: dropped a malformed message: %s", exc)
                continue
            outcome = pending.get(message.header.request_id)
            if message.header.kind is wire.Kind.CONTROL:
                self._telemetry(message)
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
            if all(n in outcome.outputs for n in output_names):
                outcome.latency_s = now - outcome.sent_s
                done.append(pending.pop(outcome.request_id))
        return done


    def _telemetry(self, message: wire.Message) -> None:
        try:
            body = wire.read_json(message)
        except Exception as exc:  # as for any frame on the sink: logged, never fatal
            log.warning("client: dropped a malformed telemetry message: %s", exc)
            return
        if body.get("op") != "telemetry":
            return
        if "probe" in body:
            self.probes.append(body["probe"])
        else:
            key = (message.header.plan_version, message.header.request_id)
            self.telemetry.setdefault(key, []).append(body)


def run_requests(client: Client, origin: str, plan_version: int, output_names: tuple[str, ...],
                 inputs_for: Callable[[int], Mapping[str, np.ndarray]], requests: int, in_flight: int = 1,
                 timeout_s: float = 60.0, first_id: int = 1,
                 on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Send `requests` requests with at most `in_flight` outstanding; every outcome, in id order."""
    pending: dict[int, Outcome] = {}
    finished: list[Outcome] = []
    next_id, last_id = first_id, first_id + requests
    while next_id < last_id or pending:
        while next_id < last_id and len(pending) < in_flight:
            pending[next_id] = Outcome(next_id, time.perf_counter())
            client.submit(origin, plan_version, next_id, inputs_for(next_id))
            next_id += 1
        for outcome in client.collect(pending, output_names, 0.2):
            if outcome.errors:
                client.cancel(plan_version, outcome.request_id)
            finished.append(outcome)
            if on_done is not None:
                on_done(outcome)
        now = time.perf_counter()
        for rid in [r for r, o in pending.items() if now - o.sent_s > timeout_s]:
            outcome = pending.pop(rid)
            outcome.errors.append({"error": f"no result within {timeout_s:g} s"})
            client.cancel(plan_version, rid)
            finished.append(outcome)
            if on_done is not None:
                on_done(outcome)
    return sorted(finished, key=lambda o: o.request_id)
