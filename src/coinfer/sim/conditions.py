"""What changes in the simulated world while a plan serves.

`Conditions` names what changes while a plan serves: the bandwidth of some directed links (a
`coinfer.shaping.BandwidthTrace` each, replacing the link's configured bandwidth; its latency and
per-message overhead stay) and the speed of some devices (a `SpeedTrace`: a piecewise-constant
slowdown factor, 2.0 = twice as slow as profiled, as background load or thermal throttling would
make it). Anything not named runs exactly as the cluster file says.
Times are seconds on the simulation's clock, which starts at 0; a bandwidth trace starts playing
at 0 too.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from coinfer.errors import UserInputError
from coinfer.shaping import BandwidthTrace

Link = tuple[str, str]  # a directed link (source, target)


@dataclass(frozen=True)
class SpeedTrace:
    """Slowdown factor `factor[i]` from `start_s[i]` until the next start (the last holds forever).

    Before `start_s[0]` the device runs at factor 1. A factor multiplies the profiled node times.
    """

    start_s: tuple[float, ...]
    factor: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.start_s) != len(self.factor) or not self.start_s:
            raise UserInputError(f"a speed trace needs as many start times as factors, at least one; got "
                                 f"{len(self.start_s)} times and {len(self.factor)} factors")
        if any(b <= a for a, b in zip(self.start_s, self.start_s[1:], strict=False)):
            raise UserInputError(f"speed trace start times must increase, got {self.start_s}")
        if any(not (f > 0 and math.isfinite(f)) for f in self.factor):
            raise UserInputError(f"speed factors must be finite and positive, got {self.factor}")

    def segment(self, t_s: float) -> tuple[float, float]:
        """(factor at t, seconds until it next changes; inf after the last change)."""
        i = bisect.bisect_right(self.start_s, t_s) - 1
        factor = self.factor[i] if i >= 0 else 1.0
        next_start = self.start_s[i + 1] if i + 1 < len(self.start_s) else math.inf
        return factor, next_start - t_s

    def finish_s(self, begin_s: float, work_s: float) -> float:
        """When `work_s` seconds of profiled work started at `begin_s` ends.

        The factor may change mid-stage: each piece of the stage runs at the factor of its own
        time, as a processor sharing its cores with a load that comes and goes would.
        """
        t, left = begin_s, work_s
        while left > 0:
            factor, span_s = self.segment(t)
            if left * factor <= span_s:
                return t + left * factor
            left -= span_s / factor
            t += span_s
        return t


@dataclass(frozen=True)
class Conditions:
    """Bandwidth traces per directed link and speed traces per device (see the module docstring)."""

    link_traces: Mapping[Link, BandwidthTrace] = field(default_factory=dict)
    speed: Mapping[str, SpeedTrace] = field(default_factory=dict)
