"""Neurosurgeon's figure: one bar per single cut of the topological order."""

from __future__ import annotations

import pytest

from coinfer.plots import cut_candidates


def test_every_cut_is_a_candidate(toy_problem) -> None:  # type: ignore[no-untyped-def]
    # j = 0: all on the edge (1.015 + 0.3 + 0.016 s); j = 1: a on the phone, b on the edge (3.231 s);
    # j = 2: all on the phone (3 s). Worked out in tests/cost/test_terms.py.
    rows = cut_candidates(toy_problem)
    assert [j for j, _, _ in rows] == [0, 1, 2]
    assert [b.latency_s for _, _, b in rows] == pytest.approx([1.331, 3.231, 3.0])
