"""Profiles: what each node costs on each device (measured, roofline-predicted or regressed)."""

from coinfer.profile.timings import Profile

__all__ = ["Profile"]
