"""The adaptive paper's throttling experiment, live: real workers, a fog -> cloud link that drops and recovers.

REFERENCE section 4 (Deng et al., arXiv 2605.09623): with the fog -> cloud link throttled to about
5 Mbit/s the scheduler moved to a split sending 98 KB instead of 1.6 MB, and back when the link
recovered. Here `coinfer adapt` serves the stream on local worker processes (devices emulated by
holding each stage for its predicted time, links shaped in the sending worker) while fog -> cloud
follows a trace written by this script: the preset's 100 Mbit/s, then 5 Mbit/s from
`--throttle-from-s` to `--throttle-until-s`, then 100 Mbit/s again. Every output is verified against
the unpartitioned model (`--verify`), so the same run is also a long lossless run with switches.

Prints, per phase (before, during, after the throttle), the requests served, the bytes each sent
over fog -> cloud (median; measured from the workers' hop telemetry), the p50 latency and the
deadline misses; then every switch; then how far the emulation fell behind; then lost, duplicated
and verification.

This machine computes the emulated GPU desktop's stages (and VGG16's laptop stages) slower than
those devices would. Such a stage is held for this machine's time; the records keep the played
device's time and take the lag off the latency (`runtime.adaptive._record`), so the phases'
latencies and the policy's estimates are the played world's, and the report counts the lagging
stages under `emulation_behind`.

    .venv/bin/python benchmarks/adapt_throttle_live.py [--model alexnet] [--policy reap] [--requests 1200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from adapt_policies import DEADLINES_S, OBJECTIVE, THROTTLE_BITS_PER_S, TRACED

LINK = "->".join(TRACED)
NOMINAL_MBIT_PER_S, THROTTLED_MBIT_PER_S = 100.0, THROTTLE_BITS_PER_S / 1e6


def write_trace(path: Path, from_s: float, until_s: float) -> None:
    """time_s mbit_per_s lines (the traces' format); the last sample lies far out so it never repeats."""
    rows = [(0.0, NOMINAL_MBIT_PER_S), (from_s, THROTTLED_MBIT_PER_S), (until_s, NOMINAL_MBIT_PER_S),
            (1e6, NOMINAL_MBIT_PER_S)]
    path.write_text("".join(f"{t} {b}\n" for t, b in rows))


def serve(args: argparse.Namespace, trace: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "coinfer", "adapt", f"torchvision:{args.model}", "--cluster", "pi-laptop-desktop",
               "--deadline-s", str(DEADLINES_S[args.model]), "--objective", OBJECTIVE,
               "--trace", f"{LINK}={trace}", "--policy", args.policy, "--requests", str(args.requests),
               "--verify", "--json"]
    if args.plot:
        command += ["--plot", str(args.plot)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if not done.stdout.strip():
        raise SystemExit(f"coinfer adapt failed ({done.returncode}):\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def phases(report: dict[str, Any], from_s: float, until_s: float) -> list[dict[str, Any]]:
    timeline = report["timeline"]
    sent_s, latency_s = timeline["sent_s"], timeline["latency_s"]
    sent_bytes = timeline["link_bytes"].get(LINK, [0] * len(sent_s))
    deadline = report["deadline_s"]
    rows = []
    for name, lo, hi in (("before", 0.0, from_s), ("during", from_s, until_s), ("after", until_s, float("inf"))):
        picked = [i for i, t in enumerate(sent_s) if lo <= t < hi]
        done = [latency_s[i] for i in picked if latency_s[i] is not None]
        rows.append({"phase": name, "requests": len(picked),
                     "median_bytes": statistics.median(sent_bytes[i] for i in picked) if picked else None,
                     "p50_ms": statistics.median(done) * 1e3 if done else None,
                     "misses": sum(1 for t in done if t > deadline)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="alexnet", choices=sorted(DEADLINES_S))
    parser.add_argument("--policy", default="reap")
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--throttle-from-s", type=float, default=20.0)
    parser.add_argument("--throttle-until-s", type=float, default=60.0)
    parser.add_argument("--plot", type=Path, help="also write the timeline figure")
    parser.add_argument("--json", action="store_true", help="print the phases and the report's figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "throttle.txt"
        write_trace(trace, args.throttle_from_s, args.throttle_until_s)
        report = serve(args, trace)
    rows = phases(report, args.throttle_from_s, args.throttle_until_s)
    if args.json:
        keep = ("requests", "ok", "lost", "duplicated", "bit_identical", "switches", "plans", "latency_s",
                "energy_j_per_request", "deadline_misses", "decision_ms", "emulation_behind")
        json.dump({"phases": rows, **{k: report.get(k) for k in keep}}, sys.stdout, indent=1)
        print()
        return 0
    print(f"{args.model}, policy {args.policy}, {LINK} {NOMINAL_MBIT_PER_S:g} -> {THROTTLED_MBIT_PER_S:g} Mbit/s "
          f"during [{args.throttle_from_s:g}, {args.throttle_until_s:g}) s\n")
    print(f"| phase | requests | bytes over {LINK} per request (median) | p50 ms | deadline misses |")
    print("|---|---|---|---|---|")
    for r in rows:
        size = "-" if r["median_bytes"] is None else f"{r['median_bytes'] / 1e3:.1f} kB"
        p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.0f}"
        print(f"| {r['phase']} | {r['requests']} | {size} | {p50} | {r['misses']} |")
    print()
    for s in report["switches"]:
        print(f"switch at {s['at_s']:.1f} s (request {s['request_id']}) to {s['plan']}: {s['reason']}")
    behind = report.get("emulation_behind") or {}
    if behind.get("stages"):
        print(f"\nemulation behind on {behind['stages']} of {behind['of']} stages {behind['by_device']}: median "
              f"{behind['median_ms']:.1f} ms, max {behind['max_ms']:.1f} ms (this machine's lag, taken out of the "
              f"played latencies above and of the estimates)")
    print(f"\nrequests {report['requests']}, ok {report['ok']}, lost {report['lost']}, duplicated "
          f"{report['duplicated']}; every output bit-identical to the unpartitioned model: "
          f"{report.get('bit_identical')}")
    return 0 if report["lost"] == 0 and report["duplicated"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
