"""Which devices and links a run may use now: the watchdog's verdicts and the caller's own reports, in one place.

`Availability.take()` drains the watchdog (coinfer.runtime.watchdog) and what the caller reported
itself (a worker that did not answer its call, or one that said it lacks a request's plan version),
and keeps `down` (devices) and `cut` (directed links) up to date:

- a device goes down on a `down` verdict or report;
- it comes back on an `up` verdict followed by a full `health` check that passes. A device marked
  down from a report while the watchdog still hears it gets that `up` from here, since the
  watchdog saw no change and will not give one;
- a device that comes back as another process (a new incarnation) restarted: `take` says so, as
  whatever it held (a standby's version) is gone;
- a link goes down and up on its own verdicts.

The client learns every device down (`Client.unreachable`) so that its cancels and undeploys skip it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from coinfer.errors import UnreachableError, WorkerError
from coinfer.runtime import wire
from coinfer.runtime.client import Client
from coinfer.runtime.watchdog import HealthEvent, Link, Watchdog

HEALTH_CHECK_S = 2.0


@dataclass
class Taken:
    """What one `take` saw: the verdicts that changed what is usable, those that did not, and the
    devices that came back as new processes."""

    changed: list[HealthEvent] = field(default_factory=list)
    unchanged: list[HealthEvent] = field(default_factory=list)
    restarted: set[str] = field(default_factory=set)


class Availability:
    def __init__(self, client: Client, watchdog: Watchdog) -> None:
        self.client, self.watchdog = client, watchdog
        self.down: set[str] = set()
        self.cut: set[Link] = set()
        self._reported: list[HealthEvent] = []
        self._suspects: set[str] = set()  # marked down from a report: re-admitted once the watchdog hears them
        self._went_down_as: dict[str, str] = {}  # device -> its worker's incarnation when it went down

    def report_down(self, device: str, detail: str) -> None:
        """The caller found `device` unusable itself: it is down from the next `take`."""
        self._reported.append(HealthEvent(time.perf_counter(), device, "down", detail))

    def unreachable(self, error: UnreachableError) -> None:
        """The caller's own call to a worker timed out: down now, as if the watchdog had said so."""
        if error.device is not None:
            self.report_down(error.device, str(error))

    def lacks_version(self, errors: list[dict[str, Any]]) -> bool:
        """Whether these error reports of a request all say a worker lacks its plan version; if so
        those workers are down (they restarted) until their heartbeats re-admit them."""
        if not errors or any(e.get("kind") != wire.NOT_DEPLOYED or e.get("worker") not in self.client.workers
                             for e in errors):
            return False
        for e in errors:
            self.report_down(str(e["worker"]), f"it does not hold the request's plan version: {e.get('error')}")
        return True

    def take(self) -> Taken:
        taken = Taken()
        reported, self._reported = self._reported, []
        self._suspects |= {e.device for e in reported}
        for event in [*reported, *self.watchdog.events(), *self._answering_suspects(reported)]:
            (taken.changed if self._note(event, taken) else taken.unchanged).append(event)
        return taken

    def _note(self, event: HealthEvent, taken: Taken) -> bool:
        if event.link is not None:
            was = event.link in self.cut
            (self.cut.add if event.state == "down" else self.cut.discard)(event.link)
            return was != (event.link in self.cut)
        device = event.device
        if event.state == "down" and device not in self.down:
            self.down.add(device)
            self.client.unreachable.add(device)
            self._went_down_as[device] = self.watchdog.incarnation(device)
            return True
        if event.state != "down" and device in self.down and self._healthy(device):
            self.down.discard(device)
            self.client.unreachable.discard(device)
            if self._went_down_as.pop(device, None) != self.watchdog.incarnation(device):
                taken.restarted.add(device)
            return True
        return False

    def _answering_suspects(self, reported: list[HealthEvent]) -> list[HealthEvent]:
        fresh = {e.device for e in reported}
        back = [d for d in self._suspects if d not in fresh and d in self.down and self.watchdog.state(d) != "down"]
        self._suspects -= set(back)
        return [HealthEvent(time.perf_counter(), d, "up", "answers heartbeats") for d in back]

    def _healthy(self, device: str) -> bool:
        try:
            reply = self.client.call(device, {"op": "health"}, HEALTH_CHECK_S)
        except WorkerError:
            return False
        return bool(reply.get("ok")) and reply.get("compute") == "alive"
