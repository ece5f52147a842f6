"""The calibration of this machine as a JSON file (see `coinfer.profile.analytic.Calibration`).

    {"version": 1, "peak_flops_per_s": 7.1e10, "memory_bandwidth_bytes_per_s": 1.9e10,
     "node_overhead_s": 5e-06, "efficiency": {"conv": 0.42, "matmul": 0.61}, "fitted_on": ["resnet18"]}

By default it lives in the cache directory the CLI passes (`default_calibration_path`).
"""

from __future__ import annotations

import json
from pathlib import Path

from coinfer.errors import ProfileError
from coinfer.files.validation import read_json
from coinfer.profile.analytic import Calibration

CALIBRATION_FILE_NAME = "calibration.json"


def default_calibration_path(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / CALIBRATION_FILE_NAME


def save_calibration(calibration: Calibration, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_dict(), indent=1) + "\n")


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; errors name the file and say to re-calibrate."""
    path = Path(path)
    doc = read_json(path, ProfileError, "calibration")
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise ProfileError(f"{path}: expected a calibration document with 'version': 1; re-calibrate")
    try:
        return Calibration.from_dict(doc)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None
