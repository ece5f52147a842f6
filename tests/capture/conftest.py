"""Captured graphs are cached per test session: capturing is the slow part of every test here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest


def _import_stdlib_profile() -> None:
    """pytest puts tests/ on sys.path (for tests/conftest.py) and tests/profile/ is a package, so
    `import profile` (done by cProfile, which torch._dynamo imports) finds the tests package
    instead of the standard library module. Import the stdlib module first, with tests/ hidden.
    Harmless once tests/profile/ has no __init__.py."""
    if "profile" in sys.modules:
        return
    tests_dir = Path(__file__).resolve().parent.parent
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != tests_dir]
    try:
        import cProfile  # noqa: F401
    finally:
        sys.path[:] = saved


_import_stdlib_profile()
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
