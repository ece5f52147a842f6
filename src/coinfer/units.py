"""Quantities written for people: the one place a byte count becomes text in a message."""

from __future__ import annotations


def format_bytes(n: float) -> str:
    """512 B, 2.0 kB, 412.3 MB, 1.6 GB (decimal units, one decimal)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"
