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


def test_the_adapt_timeline_marks_failures_and_recoveries(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from unittest import mock

    from coinfer import plots

    timeline = {"sent_s": [0.0, 1.0, 2.0, 3.0], "latency_s": [0.1, 0.1, 1.2, 0.1], "cut_bytes": [10, 10, 0, 10],
                "bandwidth_bits_per_s": {},
                "health": [{"at_s": 1.5, "device": "edge", "state": "down", "action": "re-planned"},
                           {"at_s": 2.5, "device": "edge", "state": "up", "action": "back to the plan"},
                           {"at_s": 2.7, "device": "cloud", "state": "degraded", "action": "noted"}]}
    with mock.patch("matplotlib.axes.Axes.axvline", autospec=True) as vline:
        path = plots.plot_adapt_timeline({"partial": timeline}, tmp_path / "t.png")
    # one line per panel (three) for each of the two verdicts that move work; degraded is not drawn
    drawn = [(c.args[1], c.kwargs["color"]) for c in vline.call_args_list]
    assert sorted(set(drawn)) == [(1.5, "red"), (2.5, "green")] and len(drawn) == 6
    assert {c.kwargs["label"] for c in vline.call_args_list} == {None, "edge down", "edge back"}
    assert path.is_file()
