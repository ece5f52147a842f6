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
