"""Watching workers: heartbeats over the control plane, and the verdicts whoever drives requests acts on.

A `Watchdog` thread sends every watched worker a `heartbeat` control message every `interval_s`,
over connections of its own (so a heartbeat never waits behind a deploy or a chunk of weights),
and reads the replies. Each worker is, at any moment:

- **up**: it answered within the last `down_after_s`;
- **down**: it has not answered for `down_after_s` (a process that died, one that is stopped, a
  machine or route that is gone), it answers that its compute thread has stopped, or it answers
  as a new process (it restarted between two heartbeats and lost its deployments; it is up again
  at its next answer);
- a **link** is down when both its ends answer but its receiver has not heard its sender for
  `down_after_s` (every worker sends keepalives to its peers, coinfer.runtime.worker.keepalive);
  only the links `watch_links` names, those the plan in use sends over, are judged;
- **degraded**: it answers, but one of its stages has lately taken more than `slow_factor` times
  what it should: the larger of the plan's prediction and the median of the stage's first
  `BASELINE_RUNS` runs on this worker (so a machine slower than the profile is not degraded for it).

Every change of verdict is a `HealthEvent`, kept in order until the driver drains them
(coinfer.runtime.recovery). A down worker keeps being asked: its first answer is the `up` event of
its coming back, after which the driver re-admits it with a full health check.

Why our own heartbeats rather than ZeroMQ's (ZMQ_HEARTBEAT_IVL): those close a dead connection
but tell the application nothing, and a stopped process's kernel still holds the TCP connection
open; an application-level answer proves the worker's I/O thread runs, and carries the stage
times that degraded needs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from coinfer.errors import WireError
from coinfer.runtime import wire

log = logging.getLogger(__name__)

State = Literal["up", "down", "degraded"]
Link = tuple[str, str]  # (source device, target device)
BASELINE_RUNS = 5  # a stage's own expected time is the median of its first runs, once it has this many

# a dead device is declared down within 1 s on a LAN: its last answer came at most a heartbeat
# interval before it died, and silence is judged every JUDGE_EVERY_S
DEFAULT_DOWN_AFTER_S = 0.8
JUDGE_EVERY_S = 0.02
DEFAULT_SLOW_FACTOR = 3.0


@dataclass(frozen=True)
class HealthEvent:
    at_s: float  # time.perf_counter() when the verdict changed
    device: str  # the device, or "source->target" for a link
    state: State
    detail: str
    link: Link | None = None  # a link's verdict (its ends both answer heartbeats)


@dataclass
class _Watched:
    socket: Any
    last_answer_s: float
    state: State = "up"
    beats: int = 0
    incarnation: str = ""  # the worker process's id: a new one means it restarted


class Watchdog:
    """Heartbeats to `devices`; `connect(device)` opens a DEALER to that device's control socket.

    Use as a context manager, or `start()` and `stop()`."""

    def __init__(self, connect: Callable[[str], Any], devices: Iterable[str], *,
                 down_after_s: float = DEFAULT_DOWN_AFTER_S, interval_s: float | None = None,
                 slow_factor: float = DEFAULT_SLOW_FACTOR) -> None:
        if down_after_s <= 0:
            raise ValueError(f"down_after_s must be positive, got {down_after_s}")
        self.connect = connect
        self.devices = tuple(dict.fromkeys(devices))
        self.down_after_s = down_after_s
        # five heartbeats per down_after_s: one lost or late answer never declares a device down
        self.interval_s = interval_s if interval_s is not None else down_after_s / 5
        self.slow_factor = slow_factor
        self._events: deque[HealthEvent] = deque()
        self._states: dict[str, State] = dict.fromkeys(self.devices, "up")
        self._expected_s: dict[tuple[int, int], float] = {}  # (plan version, stage index) -> seconds
        self._baseline_s: dict[tuple[str, int, int], float] = {}
        self._links: dict[Link, float] = {}  # watched link -> time.perf_counter() since it is watched
        self._link_down: set[Link] = set()
        self._last_answer_s: dict[str, float] = {}  # the watchdog thread's own record, for link verdicts
        self._incarnations: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="coinfer-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the driver reads ----------------------------------------------------------------

    def expect(self, plan_version: int, stage_time_s: Mapping[int, float]) -> None:
        """The predicted time of each stage (by index) of a deployed plan version: degraded's yardstick."""
        with self._lock:
            self._expected_s.update({(plan_version, i): s for i, s in stage_time_s.items()})

    def watch_links(self, links: Iterable[Link]) -> None:
        """Judge these directed links from now on (those the plan in use sends over), and no others."""
        now = time.perf_counter()
        with self._lock:  # a fresh grace for each: a receiver that just restarted hears its senders soon
            self._links = dict.fromkeys(links, now)
            self._link_down &= set(self._links)

    def events(self) -> list[HealthEvent]:
        """The verdict changes since the last call, oldest first."""
        with self._lock:
            out = list(self._events)
            self._events.clear()
        return out

    def incarnation(self, device: str) -> str:
        """The process id `device`'s worker last answered with ('' before its first answer)."""
        with self._lock:
            return self._incarnations.get(device, "")

    def state(self, device: str) -> State:
        with self._lock:
            return self._states[device]

    @property
    def down(self) -> frozenset[str]:
        with self._lock:
            return frozenset(d for d, s in self._states.items() if s == "down")

    @property
    def links_down(self) -> frozenset[Link]:
        with self._lock:
            return frozenset(self._link_down)

    @property
    def degraded(self) -> frozenset[str]:
        with self._lock:
            return frozenset(d for d, s in self._states.items() if s == "degraded")

    # -- the thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        import zmq

        now = time.perf_counter()
        watched = {d: _Watched(self.connect(d), now) for d in self.devices}
        poller = zmq.Poller()
        by_socket = {}
        for device, w in watched.items():
            poller.register(w.socket, zmq.POLLIN)
            by_socket[w.socket] = device
        next_beat_s = looked_s = now
        try:
            while not self._stopping.is_set():
                now = time.perf_counter()
                stalled_s = now - looked_s - 2 * JUDGE_EVERY_S
                if stalled_s > 0:  # this thread did not run (its process was busy): no heartbeat went out
                    for w in watched.values():  # then, so silence meanwhile is not the workers'
                        w.last_answer_s += stalled_s
                looked_s = now
                if now >= next_beat_s:
                    for w in watched.values():
                        w.beats += 1
                        beat = wire.json_frames(wire.Kind.CONTROL, {"op": "heartbeat", "beat": w.beats})
                        with contextlib.suppress(zmq.Again):  # never block on a dead peer: the beat is skipped
                            w.socket.send_multipart(beat, zmq.NOBLOCK)
                    next_beat_s = now + self.interval_s
                wait_ms = max(1, int(min(next_beat_s - time.perf_counter(), JUDGE_EVERY_S) * 1000))
                for sock, _ in poller.poll(wait_ms):
                    device = by_socket[sock]
                    while sock.poll(0):
                        self._answered(device, watched[device], sock.recv_multipart())
                self._judge_silence(watched, time.perf_counter())
        except Exception:  # the watchdog must never die silently: log, and every device reads as before
            log.exception("watchdog stopped")
        finally:
            for w in watched.values():
                w.socket.close(linger=0)

    def _answered(self, device: str, w: _Watched, frames: list[bytes]) -> None:
        now = time.perf_counter()
        try:
            body = wire.read_json(wire.unpack(frames))
        except WireError as exc:
            log.warning("watchdog: a malformed heartbeat answer from %s: %s", device, exc)
            return
        w.last_answer_s = self._last_answer_s[device] = now
        incarnation = str(body.get("incarnation", ""))
        restarted = bool(w.incarnation) and incarnation != w.incarnation and w.state != "down"
        w.incarnation = incarnation
        with self._lock:
            self._incarnations[device] = incarnation
        if restarted:  # between two heartbeats: it lost its deployments as surely as a dead one
            return self._set(device, w, "down", "it restarted, so it holds no deployment")  # the next answer: up
        compute = body.get("compute")
        if compute != "alive":
            return self._set(device, w, "down", f"its compute thread is not running: {compute}")
        heard = body.get("heard_s")
        self._judge_links(device, heard if isinstance(heard, dict) else {}, now, self._answering(now))
        slow = self._slow_stage(device, body.get("stages") or [])
        if slow:
            return self._set(device, w, "degraded", slow)
        self._set(device, w, "up", "answers heartbeats" if w.state == "down" else "stages back to their pace")

    def _judge_silence(self, watched: Mapping[str, _Watched], now: float) -> None:
        for device, w in watched.items():
            silent_s = now - w.last_answer_s
            if silent_s > self.down_after_s and w.state != "down":
                self._set(device, w, "down", f"no heartbeat answer for {silent_s:.2f} s")

    def _answering(self, now: float) -> set[str]:
        """The devices whose last heartbeat answer is at most two intervals old: alive right now."""
        return {d for d, t in self._last_answer_s.items() if now - t <= 2 * self.interval_s}

    def _judge_links(self, target: str, heard_s: dict[str, Any], now: float, answering: set[str]) -> None:
        """The links into `target`, from its heartbeat's ages of the last message of each peer. Only
        a sender that answers heartbeats right now can have a dead link: a silent sender is a device
        verdict, which its own silence gives in time."""
        with self._lock:
            links = [(link, since) for link, since in self._links.items() if link[1] == target]
        for (source, _), since in links:
            if source not in answering:
                continue
            age = heard_s.get(source)
            silent_s = float(age) if isinstance(age, (int, float)) else now - since  # never heard: since watched
            link = (source, target)
            if silent_s > self.down_after_s and link not in self._link_down:
                self._link_event(link, "down", f"{target} has not heard {source} for {silent_s:.2f} s")
            elif silent_s <= self.down_after_s and link in self._link_down:
                self._link_event(link, "up", f"{target} hears {source} again")

    def _link_event(self, link: Link, state: State, detail: str) -> None:
        log.warning("watchdog: link %s->%s is %s: %s", *link, state, detail)
        with self._lock:
            if state == "down":
                self._link_down.add(link)
            else:
                self._link_down.discard(link)
            self._events.append(HealthEvent(time.perf_counter(), f"{link[0]}->{link[1]}", state, detail, link))

    def _slow_stage(self, device: str, stages: list[Any]) -> str:
        """Why `device` is degraded ('' when it is not), from its heartbeat's recent stage times."""
        for row in stages:
            if not (isinstance(row, list) and len(row) == 4):
                continue
            version, index, recent_s, runs = row
            key = (int(version), int(index))
            baseline = self._baseline_s.get((device, *key))
            if baseline is None:
                if runs < BASELINE_RUNS:
                    continue  # no verdict on a stage's first runs: they include PyTorch's first-call costs
                baseline = self._baseline_s[(device, *key)] = float(recent_s)
            with self._lock:
                predicted = self._expected_s.get(key, 0.0)
            expected = max(predicted, baseline)
            if expected > 0 and recent_s > self.slow_factor * expected:
                return (f"stage {index} of plan version {version} lately takes {recent_s * 1e3:.1f} ms, "
                        f"{recent_s / expected:.1f}x its expected {expected * 1e3:.1f} ms")
        return ""

    def _set(self, device: str, w: _Watched, state: State, detail: str) -> None:
        if w.state == state:
            return
        w.state = state
        event = HealthEvent(time.perf_counter(), device, state, detail)
        log.warning("watchdog: %s is %s: %s", device, state, detail)
        with self._lock:
            self._states[device] = state
            self._events.append(event)
