"""The `coinfer` command: thin subcommands over library functions.

Configuration is read here once (flags, the cache directory from XDG_CACHE_HOME) and passed down
as values; a `CoinferError` is printed as one message without a traceback.

Exit status, for every command: 0 ok; 1 a request failed or the plan is infeasible (a solver's
infeasibility included); 2 a mistake in the input (a flag, a file, a model spec); 3 a worker or
the network could not be reached (the message names the worker and its address). The status of
an error is its class's `exit_code` (coinfer.errors).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from coinfer.cli import (
    adapt_cmd,
    bench_cmd,
    capture_cmd,
    compare_cmd,
    demo_cmd,
    failures_cmd,
    generate_cmd,
    info_cmd,
    keys_cmd,
    plan_cmd,
    profile_cmd,
    run_cmd,
    worker_cmd,
)
from coinfer.errors import CoinferError

COMMANDS = (capture_cmd, profile_cmd, plan_cmd, compare_cmd, run_cmd, generate_cmd, adapt_cmd, failures_cmd, worker_cmd,
            keys_cmd, bench_cmd, info_cmd, demo_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coinfer",
        description="Cooperative DNN inference: capture a model, profile it, plan where each part runs, cost it.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        result: int = args.run(args)
        return result
    except CoinferError as exc:
        print(f"coinfer {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: stop quietly, as Unix tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout must stay open until exit
        return 0
