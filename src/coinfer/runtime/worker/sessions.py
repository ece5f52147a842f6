"""Sessions: the state a worker keeps between the steps of one generation (a causal LM's KV cache).

A deployment whose program holds state (coinfer.runtime.packaging.torch_program: the tensors a
step writes in place) names a session *group* and how many sessions it may hold at once. The
prefill and the decode deployments of one generation name the same group, so a session's prefill
fills the cache its decode steps read. A step's request id carries its session: the id's high bits
(`request_id >> STEP_BITS`) are the session, the low bits the step.

The first step of a session makes its state (zeros, of the shapes the program declares, for this
device's stages only); `end` frees it; a session idle for `SESSION_TTL_S` is freed too, so a
client that vanished costs nothing for long. A new session beyond the group's limit is refused
with an error naming the limit, never by evicting another session's cache (which would corrupt
its later tokens).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coinfer.errors import WireError

STEP_BITS = 20  # a session's steps: up to a million tokens, far beyond any context
MAX_SESSIONS = 1024  # the most a deploy message may ask a worker to hold at once
SESSION_TTL_S = 600.0


def session_of(request_id: int) -> int:
    return request_id >> STEP_BITS


def step_request_id(session: int, step: int) -> int:
    """The request id of step `step` (0 is the prefill) of `session`."""
    if not 0 <= step < 1 << STEP_BITS:
        raise ValueError(f"step {step} is beyond the {1 << STEP_BITS} steps a session may take")
    return session << STEP_BITS | step


@dataclass
class _Session:
    state: dict[str, Any]
    used_s: float = field(default_factory=time.monotonic)


@dataclass
class _Group:
    max_sessions: int
    versions: set[int] = field(default_factory=set)  # the deployments that name it
    sessions: dict[int, _Session] = field(default_factory=dict)


class Sessions:
    """Every session group of one worker (used by the compute thread only)."""

    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {}

    def join(self, group: str, version: int, max_sessions: int) -> None:
        g = self.groups.setdefault(group, _Group(max_sessions))
        g.max_sessions = max(g.max_sessions, max_sessions)
        g.versions.add(version)

    def leave(self, version: int) -> None:
        """A deployment went: a group no deployment names any more frees its sessions."""
        for name in [n for n, g in self.groups.items() if version in g.versions]:
            self.groups[name].versions.discard(version)
            if not self.groups[name].versions:
                del self.groups[name]

    def state(self, group: str, session: int, make: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
        """The state of `session`; each name of `make` it lacks is made then (all of them on the session's
        first step; later, what a new deployment of the group adds, a device that took over layers)."""
        g = self.groups[group]
        s = g.sessions.get(session)
        if s is None:
            if len(g.sessions) >= g.max_sessions:
                raise WireError(f"session group {group!r} already holds {len(g.sessions)} sessions, its limit; "
                                "end a session (or let one expire) before starting another")
            s = g.sessions[session] = _Session({})
        s.used_s = time.monotonic()
        for name, new in make.items():
            if name not in s.state:
                s.state[name] = new()
        return s.state

    def end(self, group: str, session: int) -> bool:
        g = self.groups.get(group)
        return g is not None and g.sessions.pop(session, None) is not None

    def expire(self, older_than_s: float = SESSION_TTL_S) -> list[tuple[str, int]]:
        now = time.monotonic()
        gone = [(name, sid) for name, g in self.groups.items() for sid, s in g.sessions.items()
                if now - s.used_s > older_than_s]
        for name, sid in gone:
            del self.groups[name].sessions[sid]
        return gone

    def held(self) -> dict[str, Mapping[str, int]]:
        """Per group: its sessions and the bytes of state they hold (what `stats` reports)."""
        return {name: {"sessions": len(g.sessions),
                       "state_bytes": sum(_nbytes(t) for s in g.sessions.values() for t in s.state.values())}
                for name, g in self.groups.items()}


def _nbytes(tensor: Any) -> int:
    return int(tensor.numel() * tensor.element_size())
