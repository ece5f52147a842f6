"""A profile: the time of every node of one graph on one device.

Measured on real hardware (`coinfer.profile.measure` here, `coinfer.runtime.remote_profile` on a
worker), predicted by a roofline from FLOPs and bytes (`coinfer.profile.analytic`) or by a
per-op-type regression (`coinfer.profile.regression`), or refined from a run: the nodes a device ran
measured, the others predicted and scaled (`coinfer.runtime.measured_profiles`). The
cost model only reads `node_time_s`; the rest says where the numbers came from so that a reader of
the JSON can judge them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

PROFILE_FORMAT_VERSION = 1

ProfileMethod = Literal["measured", "analytic", "regression", "refined"]


@dataclass(frozen=True)
class Profile:
    """Times of every node of graph `graph_name` (digest `graph_digest`) on `device`.

    `node_time_s` is the median (measured) or the prediction; `node_spread_s` is the interquartile
    range of the measured samples (empty for predictions). `settings` records what produced the
    numbers: thread count, warm-up and repeat counts, library versions, the catalog entry.
    """

    graph_name: str
    graph_digest: str
    device: str
    method: ProfileMethod
    node_time_s: Mapping[str, float]
    node_spread_s: Mapping[str, float] = field(default_factory=dict)
    settings: Mapping[str, object] = field(default_factory=dict)

    @property
    def total_time_s(self) -> float:
        return sum(self.node_time_s.values())
