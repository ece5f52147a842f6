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
    from coinfer.profile.sustained import FRAMEWORKS, sustained_fit

    specs = list(CATALOG.values())
    fits = {name: {fw: fit for fw in FRAMEWORKS if (fit := sustained_fit(name, fw)) is not None} for name in CATALOG}
    sustained = {name: {fw: fit.to_dict() | {"efficiency_by_class": fit.efficiency_by_class()}
                        for fw, fit in by_fw.items()} for name, by_fw in fits.items()}
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
                  s.memory_bytes / 1e9, s.power_w, _fits_label(sustained[s.name]), s.description]
                 for s in specs]))
    rows = [[name, fw, *(f"{100 * v:.1f}" for v in fit.efficiency_by_class().values()), fit.node_overhead_s * 1e6,
             fit.threads, fit.transferred_from or name]
            for name, by_fw in fits.items() for fw, fit in by_fw.items()]
    print("\nsustained, % of the datasheet peak (memory-bound kinds: % of its bandwidth):\n")
    print(table(["device", "framework", "dense conv", "depthwise conv", "matmul*", "attention*", "memory-bound",
                 "overhead us", "threads", "figures of"], rows))
    print("* follow the dense compute scale: the published models (CNNs) do not tell them apart")
    print("\nsustained fits: what a device sustains under a framework (cluster field 'framework', default pytorch), "
          "fitted to published latencies of that device, or transferred from a device with the same cores (\"from "
          "NAME\": uncalibrated); without one, predictions are peak-only and uncalibrated. docs/profiles.md")
    return 0


def _fits_label(by_framework: dict[str, dict[str, object]]) -> str:
    return ", ".join(fw + (f" (from {f['transferred_from']})" if "transferred_from" in f else "")
                     for fw, f in by_framework.items()) or "none (peak-only)"


def _origin_first(origin: str, devices: list[str]) -> str:
    return ", ".join([origin, *[d for d in devices if d != origin]])
