"""The device catalog: complete entries with sources, positive numbers, aliases, clear errors."""

from __future__ import annotations

import math

import pytest

from coinfer.errors import UserInputError
from coinfer.profile.catalog import CATALOG, device_spec

REQUIRED = {"rpi3b", "rpi4b", "rpi5", "jetson-nano", "jetson-xavier-nx", "jetson-orin-nano", "phone-soc",
            "laptop-cpu", "xeon-e5-2620v4", "v100", "rtx2080ti", "rtx4070ti", "a100", "h100"}
FIELDS = ("peak_flops_per_s", "memory_bandwidth_bytes_per_s", "memory_bytes", "power_w")


def test_catalog_has_the_devices_of_the_literature() -> None:
    assert set(CATALOG) >= REQUIRED


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_entry_is_complete_with_a_source_per_figure(name: str) -> None:
    spec = CATALOG[name]
    assert spec.kind in ("cpu", "gpu")
    assert spec.description
    for field in FIELDS:
        value = getattr(spec, field)
        assert value > 0 and math.isfinite(value), field
        assert any(s.startswith(f"{field}:") for s in spec.sources), f"{name}: no source for {field}"


def test_gpus_outrun_single_board_computers() -> None:
    # Sanity of magnitudes (a slip of 1e3 in the YAML shows up here): a V100 has ~400x a Pi 4.
    assert CATALOG["v100"].peak_flops_per_s > 100 * CATALOG["rpi4b"].peak_flops_per_s
    pis = [CATALOG[name].peak_flops_per_s for name in ("rpi3b", "rpi4b", "rpi5")]
    assert pis == sorted(pis)


@pytest.mark.parametrize(("alias", "name"), [
    ("rpi4", "rpi4b"), ("RPi-4B", "rpi4b"), ("xavier-nx", "jetson-xavier-nx"),
    ("snapdragon865", "phone-soc"), ("V100", "v100"),
])
def test_aliases_resolve_to_the_canonical_entry(alias: str, name: str) -> None:
    assert device_spec(alias).name == name


def test_unknown_device_lists_the_valid_names() -> None:
    with pytest.raises(UserInputError, match="no device 'tpu9000'") as info:
        device_spec("tpu9000")
    assert "rpi4b" in str(info.value) and "h100" in str(info.value)
