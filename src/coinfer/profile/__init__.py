"""Profiles: what each node costs on each device (measured, roofline-predicted or regressed).

- `catalog`: peak FLOP/s, memory bandwidth, memory and power of known hardware (`device_spec`).
- `measure`: times every node on this machine (imports torch; import it explicitly).
- `analytic`: roofline prediction for a catalogued device, optionally calibrated here.
- `regression`: per-op-kind linear models fitted on measured profiles (Neurosurgeon).
- `profile_file`, `cache`: the versioned JSON form and a directory of measured profiles.
"""

from coinfer.profile.analytic import Calibration, calibrate, calibrate_on, predict
from coinfer.profile.catalog import CATALOG, DeviceSpec, device_spec
from coinfer.profile.opkinds import OP_KINDS, op_kind
from coinfer.profile.profile_file import check_profile, load_profile, save_profile
from coinfer.profile.regression import RegressionModel
from coinfer.profile.timings import Profile

__all__ = [
    "CATALOG",
    "OP_KINDS",
    "Calibration",
    "DeviceSpec",
    "Profile",
    "RegressionModel",
    "calibrate",
    "calibrate_on",
    "check_profile",
    "device_spec",
    "load_profile",
    "op_kind",
    "predict",
    "save_profile",
]
