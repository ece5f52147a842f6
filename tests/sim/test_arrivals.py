"""Arrivals: closed and open loops, bounded by a count or by simulated time; bad inputs refused."""

from __future__ import annotations

import pytest

from coinfer.cost import evaluate
from coinfer.errors import UserInputError
from coinfer.sim import simulate
from tests.sim.toys import chain_graph, place, problem


def test_a_closed_loop_stops_sending_at_until_s_and_finishes_what_it_sent() -> None:
    p = problem(chain_graph())
    plan = place(p.graph, "edge", "edge", "fog", "fog", "cloud", "cloud")
    latency = evaluate(plan, p).latency_s
    result = simulate(p, plan, requests=10_000, until_s=10.5 * latency)
    # one at a time: requests sent at 0, L, ..., 10 L; the 11th finishes at 11 L
    assert (result.sent, len(result.records), result.lost) == (11, 11, 0)
    assert result.duration_s == pytest.approx(11 * latency)


def test_an_open_loop_stops_at_until_s_and_waits_for_the_last_request() -> None:
    p = problem(chain_graph())
    plan = place(p.graph, "edge", "edge", "fog", "fog", "cloud", "cloud")
    latency = evaluate(plan, p).latency_s
    result = simulate(p, plan, requests=10_000, rate_per_s=1 / (3 * latency), until_s=30 * latency)
    assert result.sent == 10 and result.lost == 0  # sent at 0, 3 L, ..., 27 L
    assert result.duration_s == pytest.approx(28 * latency)


def test_more_clients_than_requests_send_each_request_once() -> None:
    p = problem(chain_graph())
    result = simulate(p, place(p.graph, *(["fog"] * 6)), requests=3, in_flight=8)
    assert sorted(r.request_id for r in result.records) == [0, 1, 2] and result.sent == 3


@pytest.mark.parametrize("options", [{"requests": 0}, {"in_flight": 0}, {"rate_per_s": 0.0},
                                     {"rate_per_s": float("inf")}])
def test_impossible_arrivals_are_refused(options: dict[str, float]) -> None:
    p = problem(chain_graph())
    with pytest.raises(UserInputError):
        simulate(p, place(p.graph, *(["edge"] * 6)), **options)  # type: ignore[arg-type]
