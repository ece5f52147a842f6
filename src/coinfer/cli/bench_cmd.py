"""`coinfer bench hop`: the transport's per-hop time beside a raw TCP socket's, in one run."""

from __future__ import annotations

import argparse
from typing import Any

from coinfer.cli.common import print_json
from coinfer.errors import UserInputError


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="micro-benchmarks of the runtime (bench hop)")
    inner = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    hop = inner.add_parser("hop", help="per-hop time of coinfer's transport and of a raw TCP socket",
                           description="Send a float32 tensor of --bytes to another process and back an "
                           "acknowledgement, over coinfer's transport and over a plain TCP socket, alternately; "
                           "print the median round trip of each.")
    hop.add_argument("--bytes", type=int, default=2_621_440, help="tensor size (default 2.6 MB)")
    hop.add_argument("--repeats", type=int, default=50, help="timed hops per transport (default 50)")
    hop.add_argument("--curve", action="store_true", help="coinfer's side authenticated and encrypted with CURVE, "
                     "as a secure deployment sends (the raw socket stays plain)")
    hop.add_argument("--json", action="store_true", help="print JSON")
    hop.set_defaults(run=run_hop)


def run_hop(args: argparse.Namespace) -> int:
    from coinfer.runtime.hop import measure_hop

    if args.bytes < 4 or args.repeats < 1:
        raise UserInputError("--bytes must be at least 4 and --repeats at least 1")
    result = measure_hop(args.bytes, args.repeats, curve=args.curve)
    if args.json:
        print_json(result)
    else:
        print(f"{result['bytes']} bytes, median of {result['repeats']} hops: "
              f"coinfer{' (CURVE)' if args.curve else ''} {result['coinfer_s'] * 1e3:.3f} ms, "
              f"raw socket {result['raw_socket_s'] * 1e3:.3f} ms (ratio {result['ratio']:.2f}, "
              f"+{result['added_s'] * 1e3:.3f} ms)")
    return 0
