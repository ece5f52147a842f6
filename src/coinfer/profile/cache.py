"""A directory of measured profiles, so the same graph is not measured twice on one machine.

A cached profile is found by its graph digest, its device and the settings that change the numbers
(`CACHE_KEY_SETTINGS`: threads, warm-up and repeat counts, torch version, CPU model). The directory
is an argument: library code reads no environment; the CLI passes ``~/.cache/coinfer``. Layout:
``<cache_dir>/profiles/<graph digest>/<device>-<hash of the key settings>.json`` (profile JSON).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

from coinfer.errors import ProfileError
from coinfer.profile.profile_file import load_profile, save_profile
from coinfer.profile.timings import Profile

CACHE_KEY_SETTINGS = ("threads", "warmup", "repeats", "torch_version", "cpu_model")

log = logging.getLogger(__name__)


def cache_path(cache_dir: str | Path, graph_digest: str, device: str, key: Mapping[str, object]) -> Path:
    """Where the profile for (graph, device, key settings) lives (it may not exist yet)."""
    blob = json.dumps({k: key.get(k) for k in CACHE_KEY_SETTINGS}, sort_keys=True).encode()
    tag = hashlib.sha256(blob).hexdigest()[:12]
    safe_device = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
    return Path(cache_dir) / "profiles" / graph_digest / f"{safe_device}-{tag}.json"


def load_cached(cache_dir: str | Path, graph_digest: str, device: str,
                key: Mapping[str, object]) -> Profile | None:
    """The cached profile, or None when there is none (an unreadable entry counts as none)."""
    path = cache_path(cache_dir, graph_digest, device, key)
    if not path.is_file():
        return None
    try:
        profile = load_profile(path)
    except ProfileError as exc:
        log.warning("ignoring an unreadable cached profile (%s); it will be measured again", exc)
        return None
    if profile.graph_digest != graph_digest:
        log.warning("ignoring cached profile %s: it belongs to graph digest %s", path, profile.graph_digest)
        return None
    log.info("profile of %s on %s read from the cache %s", profile.graph_name, device, path)
    return profile


def store(cache_dir: str | Path, profile: Profile) -> Path:
    """Save `profile` under the key taken from its own settings; returns the file written."""
    path = cache_path(cache_dir, profile.graph_digest, profile.device, profile.settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_profile(profile, tmp)
    tmp.replace(path)  # atomic, so a concurrent reader never sees half a file
    return path
