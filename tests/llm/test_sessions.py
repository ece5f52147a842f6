"""The worker's session store: limits, ending, expiry, and what a deployment's `states` may declare."""

from __future__ import annotations

import pytest

from coinfer.errors import WireError
from coinfer.runtime.worker.sessions import STEP_BITS, Sessions, session_of, step_request_id


class _Tensor(list):  # type: ignore[type-arg]
    """What the store needs of a tensor: its size."""

    def numel(self) -> int:
        return len(self)

    def element_size(self) -> int:
        return 4


def _make(count: list[int]):  # type: ignore[no-untyped-def]
    def make() -> _Tensor:
        count.append(1)
        return _Tensor([0] * 4)
    return make


def test_request_ids_carry_the_session_and_the_step() -> None:
    rid = step_request_id(7, 3)
    assert session_of(rid) == 7 and rid & ((1 << STEP_BITS) - 1) == 3
    assert session_of(step_request_id(7, 0)) == 7 != session_of(step_request_id(8, 0))
    with pytest.raises(ValueError, match="steps"):
        step_request_id(1, 1 << STEP_BITS)


def test_state_is_made_once_per_session_and_freed_at_its_end() -> None:
    s, made = Sessions(), []
    s.join("g", 1, max_sessions=2)
    first = s.state("g", 1, {"k": _make(made)})
    assert s.state("g", 1, {"k": _make(made)}) is first and len(made) == 1  # the same tensors every step
    other = s.state("g", 2, {"k": _make(made)})
    assert other is not first and len(made) == 2
    assert s.end("g", 1) and not s.end("g", 1)
    assert s.held()["g"] == {"sessions": 1, "state_bytes": 16}


def test_a_session_beyond_the_limit_is_refused_never_evicting_another() -> None:
    s = Sessions()
    s.join("g", 1, max_sessions=1)
    kept = s.state("g", 1, {"k": lambda: _Tensor([1, 2])})
    with pytest.raises(WireError, match="limit"):
        s.state("g", 2, {"k": lambda: _Tensor([3])})
    assert s.state("g", 1, {}) is kept
    assert s.held()["g"] == {"sessions": 1, "state_bytes": 8}


def test_state_a_later_deployment_adds_is_made_then() -> None:
    s = Sessions()
    s.join("g", 1, 4)
    state = s.state("g", 1, {"a": lambda: 1})
    s.join("g", 2, 4)
    assert s.state("g", 1, {"a": lambda: 2, "b": lambda: 3}) == {"a": 1, "b": 3}
    assert state["a"] == 1


def test_idle_sessions_expire_and_a_group_goes_with_its_last_deployment() -> None:
    s = Sessions()
    s.join("g", 1, 4)
    s.join("g", 2, 4)
    s.state("g", 1, {"a": lambda: 1})
    assert s.expire(older_than_s=3600) == []
    assert s.expire(older_than_s=-1) == [("g", 1)]
    s.state("g", 2, {"a": lambda: 1})
    s.leave(1)
    assert "g" in s.groups  # the decode deployment still names it
    s.leave(2)
    assert s.groups == {}


@pytest.mark.parametrize(("states", "session", "message"), [
    ({"k": {"shape": [1, 4], "dtype": "float32"}}, None, "must name a session group"),
    ({"k": {"shape": [1, -4], "dtype": "float32"}}, {"group": "g", "max_sessions": 1}, "give shape"),
    ({"k": {"shape": [1] * 17, "dtype": "float32"}}, {"group": "g", "max_sessions": 1}, "give shape"),
    ({"k": {"shape": [4], "dtype": "object"}}, {"group": "g", "max_sessions": 1}, "give shape"),
    ({"k": {"shape": [4], "dtype": "float32", "fill": "os.system"}}, {"group": "g", "max_sessions": 1}, "give shape"),
    ([1, 2], {"group": "g", "max_sessions": 1}, "must be an object"),
])
def test_a_deploy_message_declares_state_the_worker_checks_before_making_any(states, session, message) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from coinfer.runtime.worker.deployment import DeploymentError, SessionDoc, _state_docs

    doc = SimpleNamespace(program={"kind": "torch", "states": states},
                          session=None if session is None else SessionDoc(**session))
    with pytest.raises(DeploymentError, match=message):
        _state_docs(doc, "deploy")  # type: ignore[arg-type]


def test_a_session_group_is_named_plainly_and_bounded() -> None:
    from pydantic import ValidationError

    from coinfer.runtime.worker.deployment import SessionDoc
    from coinfer.runtime.worker.sessions import MAX_SESSIONS

    SessionDoc(group="gen-0123abcd", max_sessions=MAX_SESSIONS)
    for bad in ({"group": "../x", "max_sessions": 1}, {"group": "g", "max_sessions": MAX_SESSIONS + 1},
                {"group": "g", "max_sessions": 0}, {"group": "", "max_sessions": 1}):
        with pytest.raises(ValidationError):
            SessionDoc(**bad)
