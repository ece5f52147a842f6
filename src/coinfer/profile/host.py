"""Facts about the machine a measurement runs on, and how its timing samples are summarised.

Shared by the torch and the onnxruntime measurements; no torch here.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
from collections.abc import Sequence

log = logging.getLogger(__name__)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none), warning when it is high.

    Other processes on the cores stall OpenMP barriers, so measured times can grow tenfold; the
    value is recorded in profile settings so a reader can tell a quiet machine's profile.
    """
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    if load > 0.5:
        log.warning("the 1-minute load average is %.1f: other processes compete for the cores and "
                    "the measured times will be inflated", load)
    return load


def median_and_spread(samples: Sequence[float]) -> tuple[float, float]:
    """(median, interquartile range) of timing samples; the range is 0 for a single sample."""
    if len(samples) < 2:
        return (samples[0] if samples else 0.0), 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), q3 - q1
