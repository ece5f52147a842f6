"""Captured graphs are cached per test session: capturing is the slow part of every test here."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")


@cache
def _captured(spec: str, layers: int | None, seq_len: int | None) -> Any:
    from coinfer.capture import capture

    return capture(spec, layers=layers, seq_len=seq_len)


@pytest.fixture(scope="session")
def captured() -> Callable[..., Any]:
    """captured(spec, layers=None, seq_len=None) -> Graph, computed once per session."""

    def get(spec: str, layers: int | None = None, seq_len: int | None = None) -> Any:
        return _captured(spec, layers, seq_len)

    return get
