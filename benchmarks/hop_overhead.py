"""Per-hop time of coinfer's transport against a raw TCP socket, in one run, for several tensor sizes.

Targets of the runtime issues: at most 1.3x a raw socket for 2.6 MB and 16 MB (1.5x with CURVE),
at most 0.3 ms added for 4 KB. Each size runs plain, then with CURVE.

    .venv/bin/python benchmarks/hop_overhead.py [--repeats 200] [--sizes 4096,2621440,16777216]
"""

from __future__ import annotations

import argparse
import sys

from coinfer.runtime.hop import measure_hop

SIZES = (4_096, 65_536, 602_112, 2_621_440, 16_777_216)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="tensor sizes in bytes")
    args = parser.parse_args()
    print("| bytes | transport | coinfer ms | raw socket ms | ratio | added ms |")
    print("|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        for curve in (False, True):
            r = measure_hop(size, args.repeats, curve=curve)
            print(f"| {r['bytes']:,} | {'CURVE' if curve else 'plain'} | {r['coinfer_s'] * 1e3:.3f} | "
                  f"{r['raw_socket_s'] * 1e3:.3f} | {r['ratio']:.2f} | {r['added_s'] * 1e3:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
