"""Link emulation in closed form: when a message sent now would arrive over an emulated link.

A link is a FIFO server: a message waits until the link is free, occupies it for the per-message
overhead plus its bytes at the link's bandwidth (constant, or following a bandwidth trace over
time), then arrives one propagation delay later. That is the cost model's transfer time
(coinfer.cost.terms.transfer_time_s: latency + overhead + bytes / bandwidth) when the link is
idle, and it queues messages behind each other when it is not, as a real link does.

The schedule is computed from the clock alone (a token bucket in closed form), so it is
deterministic: the same sends at the same times give the same arrival times, on any machine.
Traces use the format of ../shared/data/traces (`time_s  bandwidth_mbit_per_s` per line).
The runtime's link senders (coinfer.runtime.links) and the simulator (coinfer.sim) both use it,
so an emulated link and a simulated one are the same equations.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path

from coinfer.errors import UserInputError

MIN_TRACE_BITS_PER_S = 1e3  # a trace sample of 0 Mbit/s (an outage) still drains, 1 kbit/s at a time


@dataclass(frozen=True)
class BandwidthTrace:
    """Piecewise-constant bandwidth: `bits_per_s[i]` holds from `start_s[i]` to the next start.

    `time_scale` compresses the trace (2.0 plays it twice as fast); it repeats after its end.
    """

    start_s: tuple[float, ...]
    bits_per_s: tuple[float, ...]
    time_scale: float = 1.0

    @property
    def period_s(self) -> float:
        step = self.start_s[-1] - self.start_s[-2] if len(self.start_s) > 1 else 1.0
        return (self.start_s[-1] + step) / self.time_scale

    def segment(self, t_s: float) -> tuple[float, float]:
        """(bits per second at t, seconds until the rate next changes), t from the trace start."""
        period = self.period_s
        local = (t_s % period) * self.time_scale
        i = max(0, bisect.bisect_right(self.start_s, local) - 1)
        end = self.start_s[i + 1] if i + 1 < len(self.start_s) else period * self.time_scale
        return max(self.bits_per_s[i], MIN_TRACE_BITS_PER_S), max((end - local) / self.time_scale, 1e-9)

    def bits_per_s_at(self, t_s: float) -> float:
        return self.segment(t_s)[0]

    def changes_until(self, end_s: float) -> list[float]:
        """0, every time in (0, end_s] at which the rate may change (repeats included), and end_s."""
        starts = [s / self.time_scale for s in self.start_s]
        repeats = range(int(end_s // self.period_s) + 1)
        return sorted({0.0, end_s, *(k * self.period_s + s for k in repeats for s in starts
                                      if k * self.period_s + s <= end_s)})


def load_trace(path: str | Path, time_scale: float = 1.0) -> BandwidthTrace:
    """Read a `time_s bandwidth_mbit_per_s` trace; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"bandwidth trace {path} does not exist; traces live in ../shared/data/traces")
    if time_scale <= 0:
        raise UserInputError(f"trace time scale must be positive, not {time_scale}")
    starts: list[float] = []
    rates: list[float] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        try:
            t, mbit = float(fields[0]), float(fields[1])
        except (IndexError, ValueError):
            raise UserInputError(f"{path}:{number}: expected 'time_s bandwidth_mbit_per_s', "
                                 f"got {line.strip()!r}") from None
        if starts and t <= starts[-1]:
            raise UserInputError(f"{path}:{number}: time {t} does not increase (previous {starts[-1]})")
        if mbit < 0 or not math.isfinite(mbit):
            raise UserInputError(f"{path}:{number}: bandwidth {mbit} Mbit/s is not a finite non-negative number")
        starts.append(t)
        rates.append(mbit * 1e6)
    if not starts:
        raise UserInputError(f"bandwidth trace {path} has no samples")
    origin = starts[0]
    return BandwidthTrace(tuple(s - origin for s in starts), tuple(rates), time_scale)


class LinkShaper:
    """Arrival times of messages over one emulated directed link (see the module docstring).

    Not thread-safe: one sender thread owns it. Times are seconds on any monotonic clock;
    `start_s` is when the trace starts playing on that clock.
    """

    def __init__(self, bits_per_s: float | BandwidthTrace, latency_s: float = 0.0, overhead_s: float = 0.0,
                 start_s: float = 0.0) -> None:
        self.bandwidth = bits_per_s
        self.latency_s = latency_s
        self.overhead_s = overhead_s
        self.start_s = start_s
        self.free_at_s = -math.inf
        self.last_start_s = -math.inf

    def arrival_s(self, now_s: float, size_bytes: int) -> float:
        """When a message of `size_bytes` handed to the link at `now_s` arrives at the other end."""
        # the message's own transfer time (overhead + bytes + delay) starts here; before it, it queued
        self.last_start_s = max(now_s, self.free_at_s)
        begin = self.last_start_s + self.overhead_s
        self.free_at_s = self.transmit_end_s(begin, size_bytes * 8.0)
        return self.free_at_s + self.latency_s

    def transmit_end_s(self, begin_s: float, bits: float) -> float:
        bw = self.bandwidth
        if not isinstance(bw, BandwidthTrace):
            return begin_s if math.isinf(bw) else begin_s + bits / bw
        t = begin_s
        while bits > 0:
            rate, left_s = bw.segment(t - self.start_s)
            if bits <= rate * left_s:
                return t + bits / rate
            bits -= rate * left_s
            t += left_s
        return t
