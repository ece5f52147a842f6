"""Devices and the links between them: the hardware a plan runs on.

Every quantity is in SI base units and says so in its name. A `Cluster` is built from a YAML file
or a preset by `coinfer.files.cluster_file`; this module only holds the values and the few
equations that belong to a single device or link (its compute rate, its radio rate).

Links are directed: a symmetric link in a file becomes two `Link`s, one per direction, so that a
slow uplink and a fast downlink are just two entries. Two devices with no link between them cannot
exchange tensors: `Cluster.link` returns None and the cost model charges an infinite time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

Tier = Literal["end", "edge", "cloud"]
QueueModel = Literal["mm1", "md1"]
TimeModel = Literal["flops", "roofline"]


@dataclass(frozen=True)
class Dvfs:
    """Dynamic voltage and frequency scaling: power grows with the cube of the clock.

    P = kappa * f^3 (the survey's DVFS model), so computing C cycles at clock f takes C / f seconds
    and costs kappa * f^2 * C joules.
    """

    kappa_w_per_hz3: float
    clock_hz: float
    flops_per_cycle: float

    @property
    def flops_per_s(self) -> float:
        return self.clock_hz * self.flops_per_cycle

    @property
    def power_w(self) -> float:
        return self.kappa_w_per_hz3 * self.clock_hz**3


@dataclass(frozen=True)
class BackgroundLoad:
    """Other work queueing at a shared device: Poisson arrivals at `arrival_rate_per_s`, served at
    `service_rate_per_s`, exponential (M/M/1) or deterministic (M/D/1) service times."""

    arrival_rate_per_s: float
    service_rate_per_s: float
    model: QueueModel = "mm1"

    @property
    def utilisation(self) -> float:
        return self.arrival_rate_per_s / self.service_rate_per_s


@dataclass(frozen=True)
class Device:
    """One machine that can run nodes.

    `time_model` says how node times are predicted when no measured profile is given: "flops"
    divides FLOPs by `flops_per_s` (the survey's L_c = F / com); "roofline" uses the catalogued
    hardware named by `catalog` (peak FLOP/s, memory bandwidth, per-op efficiency). `framework`
    (pytorch, the default a cluster file gives a catalogued device, or onnxruntime) predicts with
    what that device sustains under that framework (coinfer.profile.sustained); `peak` asks for
    its datasheet peaks with the default efficiencies.
    """

    name: str
    tier: Tier
    flops_per_s: float
    memory_bytes: float = math.inf
    power_w: float = 0.0
    dvfs: Dvfs | None = None
    price_usd_per_s: float = 0.0
    electricity_usd_per_kwh: float = 0.0
    failure_probability: float = 0.0
    background: BackgroundLoad | None = None
    catalog: str | None = None
    time_model: TimeModel = "flops"
    origin: bool = False
    idle_power_w: float = 0.0  # drawn while waiting for the answer; the origin only (cost.terms)
    framework: str | None = None  # with a catalogued device: pytorch | onnxruntime (its sustained speed) | peak

    @property
    def busy_power_w(self) -> float:
        """Power drawn while computing: the DVFS model's kappa f^3 when given, else `power_w`."""
        return self.dvfs.power_w if self.dvfs is not None else self.power_w


@dataclass(frozen=True)
class Radio:
    """A wireless channel whose rate follows Shannon-Hartley: r = W log2(1 + p h / (N0 W))."""

    channel_width_hz: float
    transmit_power_w: float
    channel_gain: float
    noise_w_per_hz: float

    @property
    def rate_bits_per_s(self) -> float:
        snr = self.transmit_power_w * self.channel_gain / (self.noise_w_per_hz * self.channel_width_hz)
        return self.channel_width_hz * math.log2(1.0 + snr)


@dataclass(frozen=True)
class Link:
    """A directed link from `source` to `target`.

    Sending one message of b bytes takes `latency_s + overhead_s + runtime_s + 8 b /
    bandwidth_bits_per_s` (`coinfer.cost.terms.transfer_time_s`); `power_w` is the sender's transmit
    power while sending. `overhead_s` belongs to the link (protocol, radio wake-up) and the runtime's
    link emulation sleeps it; `runtime_s` is what the runtime itself spends per message beside the
    link (framing, thread hand-offs, starting the stage that reads it), which emulation must not
    add again: measured, not emulated (docs/cost-model.md).
    """

    source: str
    target: str
    bandwidth_bits_per_s: float
    latency_s: float = 0.0
    overhead_s: float = 0.0
    power_w: float = 0.0
    price_usd_per_s: float = 0.0
    price_usd_per_byte: float = 0.0
    failure_probability: float = 0.0
    radio: Radio | None = None
    runtime_s: float = 0.0  # last: fields before it are often given by position

    @property
    def bytes_per_s(self) -> float:
        return self.bandwidth_bits_per_s / 8.0


@dataclass(frozen=True)
class Cluster:
    """Devices (in file order) and directed links; exactly one device is the origin."""

    name: str
    devices: tuple[Device, ...]
    links: tuple[Link, ...] = field(default=())

    @cached_property
    def by_name(self) -> Mapping[str, Device]:
        return {d.name: d for d in self.devices}

    @cached_property
    def _links(self) -> Mapping[tuple[str, str], Link]:
        return {(lk.source, lk.target): lk for lk in self.links}

    @property
    def origin(self) -> Device:
        return next(d for d in self.devices if d.origin)

    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    @property
    def servers(self) -> tuple[Device, ...]:
        """Every device except the origin."""
        return tuple(d for d in self.devices if not d.origin)

    def device(self, name: str) -> Device:
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(
                f"cluster {self.name!r} has no device {name!r}; devices: {', '.join(self.device_names)}"
            ) from None

    def link(self, source: str, target: str) -> Link | None:
        """The directed link from `source` to `target`, or None when they cannot talk."""
        return self._links.get((source, target))

    def without(self, names: Iterable[str]) -> Cluster:
        """This cluster less the devices `names` and every link of theirs (a device that is down).
        The origin cannot be removed: requests enter there."""
        gone = set(names)
        if self.origin.name in gone:
            raise ValueError(f"the origin {self.origin.name!r} cannot leave cluster {self.name!r}: "
                             "requests enter there")
        return Cluster(self.name, tuple(d for d in self.devices if d.name not in gone),
                       tuple(lk for lk in self.links if lk.source not in gone and lk.target not in gone))

    def without_links(self, pairs: Iterable[tuple[str, str]]) -> Cluster:
        """This cluster less the directed links `pairs` (source, target): links that stopped carrying traffic."""
        cut = set(pairs)
        return Cluster(self.name, self.devices, tuple(lk for lk in self.links if (lk.source, lk.target) not in cut))
