"""Cluster YAML documents and presets, documented field by field in docs/formats.md.

    devices:
      phone: {flops_per_s: 5.0e10, memory_bytes: 4.0e9, power_w: 2.0, origin: true}
      edge:  {device: xeon-e5-2620v4}
    links:
      - {between: [phone, edge], bandwidth_bits_per_s: 2.0e7, latency_s: 0.0, power_w: 1.5}

A device's compute comes from `flops_per_s` (the survey's com_i), from a DVFS clock, or from a
catalogued `device` (whose peak rate and memory become the defaults); a link is symmetric
(`between`) or directed (`from`/`to`), and its rate is a `bandwidth_bits_per_s` or a Shannon-Hartley
`radio`. Presets are YAML files of this same form shipped in `coinfer/presets/`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from coinfer.cluster import BackgroundLoad, Cluster, Device, Dvfs, Link, Radio
from coinfer.errors import ClusterFileError, UserInputError
from coinfer.files.validation import validate

_Probability = Field(default=0.0, ge=0.0, le=1.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DvfsDoc(_Strict):
    kappa_w_per_hz3: float = Field(gt=0)
    clock_hz: float = Field(gt=0)
    flops_per_cycle: float = Field(gt=0)


class BackgroundDoc(_Strict):
    arrival_rate_per_s: float = Field(ge=0)
    service_rate_per_s: float = Field(gt=0)
    model: Literal["mm1", "md1"] = "mm1"


class DeviceDoc(_Strict):
    tier: Literal["end", "edge", "cloud"] | None = None
    device: str | None = None
    flops_per_s: float | None = Field(default=None, gt=0)
    memory_bytes: float | None = Field(default=None, gt=0)
    power_w: float | None = Field(default=None, ge=0)
    dvfs: DvfsDoc | None = None
    price_usd_per_s: float = Field(default=0.0, ge=0)
    electricity_usd_per_kwh: float = Field(default=0.0, ge=0)
    failure_probability: float = _Probability
    background: BackgroundDoc | None = None
    origin: bool = False
    idle_power_w: float = Field(default=0.0, ge=0)
    framework: Literal["pytorch", "onnxruntime", "peak"] | None = None

    @model_validator(mode="after")
    def _one_compute_source(self) -> DeviceDoc:
        if self.device is None and self.flops_per_s is None and self.dvfs is None:
            raise ValueError("give the compute speed as 'flops_per_s', 'dvfs' or a catalogued 'device' "
                             "(see 'coinfer devices')")
        if self.dvfs is not None and self.flops_per_s is not None:
            raise ValueError("give either 'dvfs' (which sets the speed from its clock) or 'flops_per_s', not both")
        if self.framework is not None and (self.device is None or self.flops_per_s is not None or self.dvfs):
            raise ValueError("'framework' predicts a catalogued 'device' by what it sustains under that framework; "
                             "give 'device' (see 'coinfer devices') and no 'flops_per_s' or 'dvfs'")
        if self.idle_power_w > 0 and not self.origin:
            raise ValueError("'idle_power_w' is what the origin draws while it waits for its answer; a server's "
                             "waiting time serves other requests, so only the origin may set it")
        return self


class RadioDoc(_Strict):
    channel_width_hz: float = Field(gt=0)
    transmit_power_w: float = Field(gt=0)
    channel_gain: float = Field(gt=0)
    noise_w_per_hz: float = Field(gt=0)


class LinkDoc(_Strict):
    between: tuple[str, str] | None = None
    source: str | None = Field(default=None, alias="from")
    target: str | None = Field(default=None, alias="to")
    bandwidth_bits_per_s: float | None = Field(default=None, gt=0)
    radio: RadioDoc | None = None
    latency_s: float = Field(default=0.0, ge=0)
    overhead_s: float = Field(default=0.0, ge=0)
    runtime_s: float = Field(default=0.0, ge=0, le=60)
    power_w: float | None = Field(default=None, ge=0)
    price_usd_per_s: float = Field(default=0.0, ge=0)
    price_usd_per_byte: float = Field(default=0.0, ge=0)
    failure_probability: float = _Probability

    @model_validator(mode="after")
    def _well_formed(self) -> LinkDoc:
        if (self.between is None) == (self.source is None and self.target is None):
            raise ValueError("name the ends as 'between: [a, b]' (both directions) or 'from: a' + 'to: b' "
                             "(one direction), not both and not neither")
        if self.between is None and (self.source is None or self.target is None):
            raise ValueError("a directed link needs both 'from' and 'to'")
        if (self.bandwidth_bits_per_s is None) == (self.radio is None):
            raise ValueError("give the rate as 'bandwidth_bits_per_s' or as a Shannon-Hartley 'radio', exactly one")
        return self

    def directions(self) -> list[tuple[str, str]]:
        if self.between is not None:
            a, b = self.between
            return [(a, b), (b, a)]
        assert self.source is not None and self.target is not None  # checked by _well_formed
        return [(self.source, self.target)]


class ClusterDoc(_Strict):
    name: str | None = None
    devices: dict[str, DeviceDoc] = Field(min_length=1)
    links: list[LinkDoc] = []


def cluster_from_dict(doc: Any, where: str | Path = "<cluster>", name: str | None = None) -> Cluster:
    """Validate a cluster document and build the Cluster; errors name `where` and the field."""
    parsed = validate(ClusterDoc, doc, where, ClusterFileError)
    origins = [n for n, d in parsed.devices.items() if d.origin]
    if len(origins) != 1:
        found = f"found {origins}" if origins else "found none"
        raise ClusterFileError(
            f"{where}: devices: exactly one device needs 'origin: true' (where the input arrives and the "
            f"result returns); {found}"
        )
    devices = tuple(_device(n, d, where) for n, d in parsed.devices.items())
    links = _links(parsed, where)
    return Cluster(name or parsed.name or Path(str(where)).stem, devices, links)


def _device(name: str, doc: DeviceDoc, where: str | Path) -> Device:
    flops, memory, power = doc.flops_per_s, doc.memory_bytes, doc.power_w
    if doc.device is not None:
        from coinfer.profile.catalog import device_spec  # the catalog supplies defaults

        try:
            spec = device_spec(doc.device)
        except UserInputError as exc:
            raise ClusterFileError(f"{where}: devices.{name}.device: {exc}") from None
        flops = flops if flops is not None else spec.peak_flops_per_s
        memory = memory if memory is not None else spec.memory_bytes
        power = power if power is not None else spec.power_w
        catalog: str | None = spec.name
    else:
        catalog = None
    dvfs = Dvfs(**doc.dvfs.model_dump()) if doc.dvfs is not None else None
    if dvfs is not None:
        flops = dvfs.flops_per_s
    background = BackgroundLoad(**doc.background.model_dump()) if doc.background is not None else None
    if background is not None and background.utilisation >= 1.0:
        raise ClusterFileError(
            f"{where}: devices.{name}.background: arrival_rate_per_s ({background.arrival_rate_per_s}) must be "
            f"below service_rate_per_s ({background.service_rate_per_s}) or the queue grows without bound"
        )
    assert flops is not None  # guaranteed by DeviceDoc._one_compute_source
    busy_w = dvfs.power_w if dvfs is not None else (power or 0.0)
    if doc.idle_power_w > busy_w:
        raise ClusterFileError(
            f"{where}: devices.{name}.idle_power_w: {doc.idle_power_w:g} W is above the power it draws while "
            f"computing ({busy_w:g} W); a device draws at least its idle power when busy, so lower it or raise power_w"
        )
    # A catalogued device is predicted by its roofline unless the file fixes its speed, and under
    # PyTorch eager (what coinfer's workers run) unless the file names another framework
    roofline = catalog is not None and doc.flops_per_s is None and dvfs is None
    return Device(
        name=name,
        tier=doc.tier or ("end" if doc.origin else "edge"),
        flops_per_s=flops,
        memory_bytes=memory if memory is not None else float("inf"),
        power_w=power or 0.0,
        dvfs=dvfs,
        price_usd_per_s=doc.price_usd_per_s,
        electricity_usd_per_kwh=doc.electricity_usd_per_kwh,
        failure_probability=doc.failure_probability,
        background=background,
        catalog=catalog,
        time_model="roofline" if roofline else "flops",
        origin=doc.origin,
        idle_power_w=doc.idle_power_w,
        framework=doc.framework or ("pytorch" if roofline else None),
    )


def _links(parsed: ClusterDoc, where: str | Path) -> tuple[Link, ...]:
    links: dict[tuple[str, str], Link] = {}
    for k, doc in enumerate(parsed.links):
        radio = Radio(**doc.radio.model_dump()) if doc.radio is not None else None
        rate = radio.rate_bits_per_s if radio is not None else doc.bandwidth_bits_per_s
        power = doc.power_w if doc.power_w is not None else (radio.transmit_power_w if radio else 0.0)
        for source, target in doc.directions():
            for end in (source, target):
                if end not in parsed.devices:
                    raise ClusterFileError(
                        f"{where}: links.{k}: device {end!r} is not defined under 'devices' "
                        f"(defined: {', '.join(parsed.devices)})"
                    )
            if source == target:
                raise ClusterFileError(f"{where}: links.{k}: a link joins two different devices, got {source!r} twice")
            if (source, target) in links:
                raise ClusterFileError(f"{where}: links.{k}: a second link from {source!r} to {target!r}; "
                                       f"keep one (use 'from'/'to' for different directions)")
            assert rate is not None  # guaranteed by LinkDoc._well_formed
            links[(source, target)] = Link(
                source=source, target=target, bandwidth_bits_per_s=rate, latency_s=doc.latency_s,
                overhead_s=doc.overhead_s, runtime_s=doc.runtime_s, power_w=power, price_usd_per_s=doc.price_usd_per_s,
                price_usd_per_byte=doc.price_usd_per_byte, failure_probability=doc.failure_probability,
                radio=radio,
            )
    return tuple(links.values())


# -- presets and files ------------------------------------------------------------------------


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("coinfer.presets").iterdir()
                  if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    if name not in preset_names():
        raise ClusterFileError(
            f"{name!r} is neither a cluster file nor a preset; presets: {', '.join(preset_names())}"
        )
    return resources.files("coinfer.presets").joinpath(f"{name}.yaml").read_text()


def load_cluster(file_or_preset: str | Path) -> Cluster:
    """Load a cluster from a YAML file path or a preset name (see `coinfer presets`)."""
    path = Path(file_or_preset)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        try:
            text = path.read_text()
        except OSError as exc:
            raise ClusterFileError(f"{path}: cannot read the cluster file ({exc.strerror})") from None
        return cluster_from_yaml(text, path)
    return cluster_from_yaml(preset_text(str(file_or_preset)), f"preset {file_or_preset}", str(file_or_preset))


def cluster_from_yaml(text: str, where: str | Path, name: str | None = None) -> Cluster:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ClusterFileError(f"{where}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    return cluster_from_dict(doc, where, name)


def preset_description(name: str) -> str:
    """The first comment line of a preset file: what it models."""
    first = preset_text(name).splitlines()[0]
    return first.lstrip("# ").strip()


def cluster_to_dict(cluster: Cluster) -> dict[str, Any]:
    """A document that loads back to an equal cluster (links written one direction each)."""
    devices: dict[str, Any] = {}
    for d in cluster.devices:
        doc: dict[str, Any] = {"tier": d.tier}
        if d.catalog is not None:
            doc["device"] = d.catalog
        if d.dvfs is not None:
            doc["dvfs"] = {"kappa_w_per_hz3": d.dvfs.kappa_w_per_hz3, "clock_hz": d.dvfs.clock_hz,
                           "flops_per_cycle": d.dvfs.flops_per_cycle}
        elif d.time_model == "flops":
            doc["flops_per_s"] = d.flops_per_s
        if d.memory_bytes != float("inf"):
            doc["memory_bytes"] = d.memory_bytes
        doc.update(power_w=d.power_w, price_usd_per_s=d.price_usd_per_s,
                   electricity_usd_per_kwh=d.electricity_usd_per_kwh,
                   failure_probability=d.failure_probability, origin=d.origin)
        if d.idle_power_w:
            doc["idle_power_w"] = d.idle_power_w
        if d.framework is not None:
            doc["framework"] = d.framework
        if d.background is not None:
            b = d.background
            doc["background"] = {"arrival_rate_per_s": b.arrival_rate_per_s,
                                 "service_rate_per_s": b.service_rate_per_s, "model": b.model}
        devices[d.name] = doc
    links = []
    for lk in cluster.links:
        doc = {"from": lk.source, "to": lk.target, "latency_s": lk.latency_s, "overhead_s": lk.overhead_s,
               "runtime_s": lk.runtime_s, "power_w": lk.power_w, "price_usd_per_s": lk.price_usd_per_s,
               "price_usd_per_byte": lk.price_usd_per_byte, "failure_probability": lk.failure_probability}
        if lk.radio is not None:
            r = lk.radio
            doc["radio"] = {"channel_width_hz": r.channel_width_hz, "transmit_power_w": r.transmit_power_w,
                            "channel_gain": r.channel_gain, "noise_w_per_hz": r.noise_w_per_hz}
        else:
            doc["bandwidth_bits_per_s"] = lk.bandwidth_bits_per_s
        links.append(doc)
    return {"name": cluster.name, "devices": devices, "links": links}
