"""`coinfer presets` and `coinfer devices`: what the built-in clusters and the catalog hold."""

from __future__ import annotations

import argparse
from typing import Any

from coinfer.cli.common import print_json
from coinfer.files.cluster_file import load_cluster, preset_description, preset_names, preset_text
from coinfer.report import table


def register(sub: Any) -> None:
    p = sub.add_parser("presets", help="list the built-in clusters, or print one as YAML",
                       description="List the preset clusters (usable wherever --cluster takes a file), "
                       "or print one preset's YAML to start a cluster file of your own.")
    p.add_argument("name", nargs="?", help="print this preset's YAML")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_presets)
    d = sub.add_parser("devices", help="list the device catalog (peak FLOP/s, bandwidth, power, sources)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(run=run_devices)


def run_presets(args: argparse.Namespace) -> int:
    if args.name:
        print(preset_text(args.name), end="")
        return 0
    rows: list[dict[str, Any]] = []
    for name in preset_names():
        c = load_cluster(name)
        rows.append({"name": name, "devices": list(c.device_names), "origin": c.origin.name,
                     "description": preset_description(name)})
    if args.json:
        print_json(rows)
    else:
        print(table(["preset", "devices (origin first)", "what it models"],
                    [[r["name"], _origin_first(r["origin"], r["devices"]), r["description"]] for r in rows]))
    return 0


def run_devices(args: argparse.Namespace) -> int:
    from coinfer.profile.catalog import CATALOG
    from coinfer.profile.sustained import fits

    specs = list(CATALOG.values())
    sustained = {name: {fw: f.to_dict() for (device, fw), f in fits().items() if device == name} for name in CATALOG}
    if args.json:
        print_json([{"name": s.name, "description": s.description, "kind": s.kind,
                     "peak_flops_per_s": s.peak_flops_per_s,
                     "memory_bandwidth_bytes_per_s": s.memory_bandwidth_bytes_per_s,
                     "memory_bytes": s.memory_bytes, "power_w": s.power_w, "sources": list(s.sources),
                     "sustained": sustained[s.name]} for s in specs])
        return 0
    print(table(["device", "kind", "peak GFLOP/s", "memory GB/s", "memory GB", "power W", "sustained fits",
                 "description"],
                [[s.name, s.kind, s.peak_flops_per_s / 1e9, s.memory_bandwidth_bytes_per_s / 1e9,
                  s.memory_bytes / 1e9, s.power_w, ", ".join(sustained[s.name]) or "none (peak-only)", s.description]
                 for s in specs]))
    print("\nsustained fits: what a device sustains under a framework, fitted to published latencies "
          "(cluster field 'framework'; docs/profiles.md). Without one, predictions are peak-only and uncalibrated.")
    return 0


def _origin_first(origin: str, devices: list[str]) -> str:
    return ", ".join([origin, *[d for d in devices if d != origin]])
