"""The device catalog: peak FP32 rate, memory bandwidth, memory and busy power of known hardware.

The figures live in `devices.yaml` (package data) next to this module, each with its source; this
module only loads them into frozen `DeviceSpec`s. A cluster file names a catalogued device
(`device: rpi4b`) to get its defaults, and the roofline predictor (`coinfer.profile.analytic`)
turns a spec into node times.

Peak FLOP/s is the vendor's FP32 figure (or cores x clock x FLOPs per cycle, derived in the YAML):
an upper bound no real layer reaches, which is why the roofline scales it by a per-op efficiency.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml

from coinfer.errors import UserInputError

DeviceKind = Literal["cpu", "gpu"]
_FIELDS = ("peak_flops_per_s", "memory_bandwidth_bytes_per_s", "memory_bytes", "power_w")


@dataclass(frozen=True)
class DeviceSpec:
    """One catalogued device; every number is in SI units and `sources` says where it came from."""

    name: str
    description: str
    kind: DeviceKind
    peak_flops_per_s: float
    memory_bandwidth_bytes_per_s: float
    memory_bytes: float
    power_w: float
    sources: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    # No published latency of its own: the device whose sustained fit it takes, and why that one
    # (the same cores, the same software stack); its predictions stay marked uncalibrated
    sustained_like: str | None = None
    sustained_like_why: str = ""


def _key(name: str) -> str:
    """Lookup key: case, dashes, underscores and spaces do not matter (RPi-4 == rpi4)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _spec(name: str, doc: Mapping[str, Any]) -> DeviceSpec:
    missing = [f for f in (*_FIELDS, "description", "kind", "sources") if f not in doc]
    if missing:
        # A packaging error, not a user error: the YAML ships with coinfer.
        raise RuntimeError(f"devices.yaml: entry {name!r} lacks {missing}")
    return DeviceSpec(
        name=name,
        description=str(doc["description"]),
        kind=doc["kind"],
        sources=tuple(str(s) for s in doc["sources"]),
        aliases=tuple(str(a) for a in doc.get("aliases", ())),
        sustained_like=(doc.get("sustained_like") or {}).get("device"),
        sustained_like_why=str((doc.get("sustained_like") or {}).get("why", "")),
        **{f: float(doc[f]) for f in _FIELDS},
    )


@cache
def _load() -> tuple[dict[str, DeviceSpec], dict[str, str]]:
    text = resources.files("coinfer.profile").joinpath("devices.yaml").read_text()
    doc = yaml.safe_load(text)
    specs = {name: _spec(name, entry) for name, entry in doc["devices"].items()}
    index: dict[str, str] = {}
    for spec in specs.values():
        for word in (spec.name, *spec.aliases):
            if index.setdefault(_key(word), spec.name) != spec.name:
                raise RuntimeError(f"devices.yaml: {word!r} names both {index[_key(word)]} and {spec.name}")
    for spec in specs.values():
        if spec.sustained_like is not None and (spec.sustained_like not in specs or not spec.sustained_like_why):
            raise RuntimeError(f"devices.yaml: {spec.name}'s sustained_like must name a catalogued device and say why")
    return specs, index


def catalog() -> Mapping[str, DeviceSpec]:
    """Every catalogued device by its canonical name, in file order."""
    return dict(_load()[0])


CATALOG: Mapping[str, DeviceSpec] = catalog()


def device_spec(name: str) -> DeviceSpec:
    """The catalogued device called `name` or one of its aliases (`rpi4` -> `rpi4b`)."""
    specs, index = _load()
    canonical = index.get(_key(name))
    if canonical is None:
        listing = ", ".join(f"{s.name} ({s.description.split(' (')[0]})" for s in specs.values())
        raise UserInputError(
            f"no device {name!r} in the catalog; use one of: {listing}; or give the device's "
            "speed directly with 'flops_per_s'"
        )
    return specs[canonical]
