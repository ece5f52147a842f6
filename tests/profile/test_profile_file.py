"""Profile JSON round trip, clear load errors, digest checks and the profile cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from profile_helpers import chain

from coinfer.errors import ProfileError
from coinfer.files.graph_file import graph_digest
from coinfer.profile import cache
from coinfer.profile.profile_file import (
    check_profile,
    load_profile,
    profile_from_dict,
    profile_to_dict,
    save_profile,
)
from coinfer.profile.timings import Profile

GRAPH = chain("g", [("aten.conv2d", 1e6, 100, 10), ("aten.relu", 1e3, 100, 0)])
PROFILE = Profile("g", graph_digest(GRAPH), "local", "measured", {"n0": 0.01, "n1": 0.002},
                  {"n0": 0.001, "n1": 0.0001}, {"threads": 2, "warmup": 3, "repeats": 10,
                                                "torch_version": "2.x", "cpu_model": "cpu"})


def test_json_round_trip(tmp_path: Path) -> None:
    save_profile(PROFILE, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json", GRAPH) == PROFILE
    assert profile_from_dict(json.loads(json.dumps(profile_to_dict(PROFILE)))) == PROFILE


def test_bad_field_error_names_the_file_and_the_field(tmp_path: Path) -> None:
    doc: dict[str, Any] = profile_to_dict(PROFILE)
    doc["nodes"]["n1"]["time_s"] = -1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match=r"bad\.json: nodes\.n1\.time_s"):
        load_profile(path)


def test_unsupported_version_says_what_to_do() -> None:
    with pytest.raises(ProfileError, match="version 7 is not supported"):
        profile_from_dict({**profile_to_dict(PROFILE), "version": 7})


def test_digest_mismatch_says_to_re_profile(tmp_path: Path) -> None:
    save_profile(PROFILE, tmp_path / "p.json")
    other = chain("g", [("aten.conv2d", 2e6, 100, 10), ("aten.relu", 1e3, 100, 0)])
    with pytest.raises(ProfileError, match="re-profile"):
        load_profile(tmp_path / "p.json", other)


def test_missing_node_is_reported() -> None:
    partial = Profile("g", PROFILE.graph_digest, "local", "measured", {"n0": 0.01})
    with pytest.raises(ProfileError, match=r"nodes\.n1: missing"):
        check_profile(partial, GRAPH)


def test_cache_hit_returns_the_same_profile(tmp_path: Path) -> None:
    cache.store(tmp_path, PROFILE)
    hit = cache.load_cached(tmp_path, PROFILE.graph_digest, "local", PROFILE.settings)
    assert hit == PROFILE
    other_threads = {**PROFILE.settings, "threads": 4}
    assert cache.load_cached(tmp_path, PROFILE.graph_digest, "local", other_threads) is None


def test_measure_cached_measures_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    measure_mod = pytest.importorskip("coinfer.profile.measure")
    calls: list[dict[str, Any]] = []

    def fake_measure(graph: Any, **kw: Any) -> Profile:
        calls.append(kw)
        settings = {**kw, "torch_version": measure_mod.torch.__version__,
                    "cpu_model": measure_mod.cpu_model()}
        times = {"n0": 0.1, "n1": 0.2}
        return Profile(graph.name, graph_digest(graph), "local", "measured", times, {}, settings)

    monkeypatch.setattr(measure_mod, "measure", fake_measure)
    first = measure_mod.measure_cached(GRAPH, tmp_path, warmup=1, repeats=2, threads=1)
    second = measure_mod.measure_cached(GRAPH, tmp_path, warmup=1, repeats=2, threads=1)
    assert first == second and len(calls) == 1
