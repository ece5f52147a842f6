"""In-process link emulation: the cost model's transfer time on an idle link, FIFO queueing, traces."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from coinfer.cluster import Link
from coinfer.cost.terms import transfer_time_s
from coinfer.errors import UserInputError
from coinfer.shaping import BandwidthTrace, LinkShaper, load_trace

TRACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces"


def test_an_idle_link_takes_exactly_the_cost_models_transfer_time() -> None:
    link = Link("a", "b", bandwidth_bits_per_s=8e6, latency_s=0.01, overhead_s=0.005)
    shaper = LinkShaper(link.bandwidth_bits_per_s, link.latency_s, link.overhead_s)
    assert shaper.arrival_s(100.0, 1_000_000) - 100.0 == pytest.approx(transfer_time_s(link, 1_000_000))


def test_messages_queue_behind_each_other_but_not_behind_the_delay() -> None:
    # 1 MB/s, 50 ms delay: two 0.1 MB messages sent at t=0 leave at 0.1 s and 0.2 s (the second
    # waits for the first's transmission, not for its propagation) and arrive 50 ms later.
    shaper = LinkShaper(8e6, latency_s=0.05)
    assert shaper.arrival_s(0.0, 100_000) == pytest.approx(0.15)
    assert shaper.arrival_s(0.0, 100_000) == pytest.approx(0.25)
    assert shaper.arrival_s(1.0, 100_000) == pytest.approx(1.15)  # idle again


def test_a_transfer_spanning_trace_segments_uses_each_segments_rate() -> None:
    # 8 Mbit/s for 1 s, then 1.6 Mbit/s until t=10: 1.2 MB sent at t=0.5 puts 0.5 MB through in
    # the first half second and the remaining 0.7 MB at 0.2 MB/s in 3.5 s: done at t=4.5.
    trace = BandwidthTrace((0.0, 1.0, 10.0), (8e6, 1.6e6, 8e6))
    shaper = LinkShaper(trace)
    assert shaper.arrival_s(0.5, 1_200_000) == pytest.approx(4.5)


def test_a_trace_repeats_and_can_be_compressed_in_time() -> None:
    trace = BandwidthTrace((0.0, 1.0), (1e6, 2e6), time_scale=2.0)  # each sample lasts 0.5 s
    assert trace.bits_per_s_at(0.25) == 1e6 and trace.bits_per_s_at(0.75) == 2e6
    assert trace.period_s == 1.0 and trace.bits_per_s_at(1.25) == 1e6


def test_an_outage_in_a_trace_still_drains() -> None:
    shaper = LinkShaper(BandwidthTrace((0.0, 1.0), (0.0, 8e6)))
    assert math.isfinite(shaper.arrival_s(0.0, 1000)) and shaper.arrival_s(0.0, 1000) > 1.0


@pytest.mark.skipif(not (TRACES / "test").is_dir(), reason=f"no traces at {TRACES} (the project's shared data)")
def test_real_traces_load() -> None:
    path = next((TRACES / "test").iterdir())
    trace = load_trace(path)
    assert trace.start_s[0] == 0.0 and len(trace.start_s) > 10 and max(trace.bits_per_s) > 0


def test_a_broken_trace_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "trace.txt"
    bad.write_text("0 1.5\n1 fast\n")
    with pytest.raises(UserInputError, match=r"trace.txt:2: expected 'time_s bandwidth_mbit_per_s'"):
        load_trace(bad)
    bad.write_text("0 1.5\n0 2\n")
    with pytest.raises(UserInputError, match=r"trace.txt:2: time 0.0 does not increase"):
        load_trace(bad)


def test_a_trace_changes_only_at_the_times_it_lists() -> None:
    trace = BandwidthTrace((0.0, 1.0, 10.0), (8e6, 1.6e6, 4e6), time_scale=2.0)  # period 9.5 s
    times = trace.changes_until(20.0)
    assert times == [0.0, 0.5, 5.0, 9.5, 10.0, 14.5, 19.0, 19.5, 20.0]
    for a, b in itertools.pairwise(times):
        inside = {trace.bits_per_s_at(a + 1e-6), trace.bits_per_s_at((a + b) / 2), trace.bits_per_s_at(b - 1e-6)}
        assert len(inside) == 1, (a, b)
    assert trace.bits_per_s_at(0.4) != trace.bits_per_s_at(0.6)  # and it does change at a listed time
