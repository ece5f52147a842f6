"""Profile JSON documents (format version 1).

    {"version": 1,
     "graph_name": "resnet18", "graph_digest": "3f1c...",   # graph_digest() of the profiled graph
     "device": "local",                                      # or "analytic:rpi4b", a cluster device name
     "method": "measured",                                   # "measured" | "analytic" | "regression" | "refined"
     "settings": {"threads": 2, "repeats": 10, ...},         # what produced the numbers (free-form)
     "nodes": {"conv1": {"time_s": 0.0123, "spread_s": 0.0004}, ...}}

`time_s` is the median (measured) or the prediction, in seconds; `spread_s` the interquartile range
of the measured samples (0 or absent for predictions). A profile belongs to one graph: loading it
for a graph whose digest differs is an error that says to re-profile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from coinfer.errors import ProfileError
from coinfer.files.graph_file import graph_digest
from coinfer.files.validation import check_version, read_json, validate
from coinfer.graph import Graph
from coinfer.profile.timings import PROFILE_FORMAT_VERSION, Profile


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeTimeDoc(_Strict):
    time_s: float = Field(ge=0)
    spread_s: float = Field(default=0.0, ge=0)


class ProfileDoc(_Strict):
    version: Literal[1]
    graph_name: str
    graph_digest: str = Field(min_length=1)
    device: str = Field(min_length=1)
    method: Literal["measured", "analytic", "regression", "refined"]
    settings: dict[str, Any] = {}
    nodes: dict[str, NodeTimeDoc] = Field(min_length=1)


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    """The JSON document of a profile; `profile_from_dict(profile_to_dict(p)) == p`."""
    return {
        "version": PROFILE_FORMAT_VERSION,
        "graph_name": profile.graph_name,
        "graph_digest": profile.graph_digest,
        "device": profile.device,
        "method": profile.method,
        "settings": dict(profile.settings),
        "nodes": {k: {"time_s": t, "spread_s": profile.node_spread_s.get(k, 0.0)}
                  for k, t in profile.node_time_s.items()},
    }


def profile_from_dict(doc: Any, where: str | Path = "<profile>") -> Profile:
    """Validate a profile document; errors name `where` and the offending field."""
    check_version(doc, PROFILE_FORMAT_VERSION, where, ProfileError, "re-profile the graph")
    parsed = validate(ProfileDoc, doc, where, ProfileError)
    spreads = {k: n.spread_s for k, n in parsed.nodes.items()}
    return Profile(
        parsed.graph_name, parsed.graph_digest, parsed.device, parsed.method,
        {k: n.time_s for k, n in parsed.nodes.items()},
        spreads if any(spreads.values()) else {},
        parsed.settings,
    )


def check_profile(profile: Profile, graph: Graph, where: str | Path = "<profile>") -> None:
    """Raise ProfileError unless `profile` was made for `graph` and times every node of it."""
    digest = graph_digest(graph)
    if profile.graph_digest != digest:
        raise ProfileError(
            f"{where}: this profile was made for graph {profile.graph_name!r} "
            f"(digest {profile.graph_digest}), not for {graph.name!r} (digest {digest}); re-profile the graph"
        )
    missing = [n.id for n in graph.nodes if n.id not in profile.node_time_s]
    if missing:
        raise ProfileError(f"{where}: nodes.{missing[0]}: missing ({len(missing)} nodes have no time); "
                           "re-profile the graph")


def save_profile(profile: Profile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profile_to_dict(profile), indent=1) + "\n")


def load_profile(path: str | Path, graph: Graph | None = None) -> Profile:
    """Read a profile file; when `graph` is given, also check that the profile belongs to it."""
    path = Path(path)
    profile = profile_from_dict(read_json(path, ProfileError, "profile"), path)
    if graph is not None:
        check_profile(profile, graph, path)
    return profile
