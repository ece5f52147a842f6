"""The energy one served request spent on each device: from the power model, or measured by RAPL.

- `request_energy_by_device_j`: the cost model's equations (`coinfer.cost.terms`) applied to the
  *measured* stage and hop times: each device's busy power times its compute seconds, plus the
  sender's transmit power times each hop's seconds, and the origin's idle power for the rest of
  the request's latency. With times equal to the predicted ones it is
  `cost.evaluate`'s `energy_by_device_j` (without codecs, whose CPU time evaluate leaves out).
- `RaplMeter`: Intel RAPL package counters under /sys/class/powercap (what the adaptive paper reads
  on its laptop fog node, REFERENCE section 4 step 3). A counter wraps at `max_energy_range_uj`;
  `energy_between_j` adds the range back once, so read at least once per wrap period (about a
  minute at 65 W for a 2^32 uJ range) or energy is lost. Package domains only: the sub-domains
  (core, uncore, dram) and `psys` overlap them.

Reports say where each number came from: `EnergySource` "model" or "rapl" (`combine`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from coinfer.adapt.records import HopSample, StageSample
from coinfer.cluster import Cluster
from coinfer.cost import terms

EnergySource = Literal["rapl", "model"]

POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"intel-rapl:\d+")  # top-level zones; sub-zones are intel-rapl:N:M


def request_energy_by_device_j(cluster: Cluster, stages: Sequence[StageSample], hops: Sequence[HopSample],
                               latency_s: float | None = None) -> dict[str, float]:
    """Joules per device (every device of `cluster`, 0 if idle) for these stage and hop times, and
    the origin's idle power while it waited, when the request's `latency_s` is known."""
    energy = {d.name: 0.0 for d in cluster.devices}
    for stage in stages:
        energy[stage.device] += terms.compute_energy_j(cluster.device(stage.device), stage.seconds)
    for hop in hops:
        energy[hop.source] += terms.transmit_energy_j(cluster.link(hop.source, hop.target), hop.seconds)
    if latency_s is not None:
        origin = cluster.origin
        busy_s = sum(s.seconds for s in stages if s.device == origin.name)
        energy[origin.name] += float(terms.waiting_energy_j(origin, latency_s, busy_s))
    return energy


def combine(model_j: Mapping[str, float],
            measured_j: Mapping[str, float]) -> tuple[dict[str, float], dict[str, EnergySource]]:
    """Per device the measured energy where there is one, else the model's; and which it was."""
    energy = {**model_j, **measured_j}
    sources: dict[str, EnergySource] = {d: "rapl" if d in measured_j else "model" for d in energy}
    return energy, sources


@dataclass(frozen=True)
class RaplReading:
    """The package counters at one moment: microjoules and each counter's wrap range, by zone."""

    energy_uj: Mapping[str, int]
    max_energy_uj: Mapping[str, int]


def energy_between_j(before: RaplReading, after: RaplReading) -> float:
    """Joules spent between two readings over the zones both have; a counter that went down wrapped once."""
    total_uj = 0
    for zone, end in after.energy_uj.items():
        start = before.energy_uj.get(zone)
        if start is None:
            continue
        delta = end - start
        if delta < 0:
            delta += after.max_energy_uj[zone]
        total_uj += delta
    return total_uj * 1e-6


class RaplMeter:
    """Reads the RAPL package counters under `root` (a fake tree in tests)."""

    source: EnergySource = "rapl"

    def __init__(self, root: Path | str = POWERCAP_ROOT) -> None:
        self.root = Path(root)

    def zones(self) -> tuple[Path, ...]:
        """The package zones: top-level intel-rapl:N whose name is package-* (psys overlaps them)."""
        if not self.root.is_dir():
            return ()
        found = []
        for path in sorted(self.root.glob("intel-rapl:*")):
            if not _PACKAGE_ZONE.fullmatch(path.name):
                continue
            name_file = path / "name"
            if name_file.exists() and not _read_text(name_file).startswith("package"):
                continue
            found.append(path)
        return tuple(found)

    def available(self) -> bool:
        """True when at least one package counter and its range can be read (often root only)."""
        try:
            return bool(self.read().energy_uj)
        except (OSError, ValueError):
            return False

    def read(self) -> RaplReading:
        """The counters now; raises OSError (naming the file) when one cannot be read."""
        energy: dict[str, int] = {}
        ranges: dict[str, int] = {}
        for zone in self.zones():
            energy[zone.name] = int(_read_text(zone / "energy_uj"))
            ranges[zone.name] = int(_read_text(zone / "max_energy_range_uj"))
        return RaplReading(energy, ranges)


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as err:
        raise OSError(f"cannot read RAPL file {path}: {err.strerror}; since Linux 5.10 energy_uj is readable "
                      f"by root only (run as root, or chmod o+r it), or use the power model") from err
