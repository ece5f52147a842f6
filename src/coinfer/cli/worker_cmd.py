"""`coinfer worker`: a long-running process that serves the stages coordinators deploy to it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from coinfer.errors import UserInputError
from coinfer.runtime import wire


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="serve stages of plans to coordinators (coinfer run --workers ...)",
                       description="Listen for deployments and requests. A coordinator (coinfer run) deploys a "
                       "plan's stages here; the worker builds them from the model source, computes, and sends "
                       "its outputs straight to the workers that read them.")
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to listen on (tcp:// optional; port 0 picks a free port, printed at start)")
    p.add_argument("--name", required=True, help="this worker's name (shown in errors and stats)")
    p.add_argument("--threads", type=int, default=1, help="compute threads (default 1)")
    p.add_argument("--emulate", metavar="DEVICE", help="hold every stage for the time the catalogued DEVICE's "
                   "roofline predicts (e.g. rpi4b; see coinfer devices); reports say emulation is on")
    p.add_argument("--max-message-bytes", type=int, default=wire.DEFAULT_MAX_PAYLOAD_BYTES,
                   help="largest tensor payload accepted (default 1 GiB)")
    p.add_argument("--inbox", type=int, default=64, help="tensors queued for computing before the worker "
                   "stops reading (backpressure; default 64)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from coinfer.runtime.worker import Worker, WorkerConfig

    listen = args.listen if args.listen.startswith("tcp://") else f"tcp://{args.listen}"
    if args.threads < 1 or args.inbox < 1 or args.max_message_bytes < 1:
        raise UserInputError("--threads, --inbox and --max-message-bytes must be positive")
    if args.emulate:
        from coinfer.profile.catalog import device_spec

        device_spec(args.emulate)  # an unknown device fails now, not at the first deployment
    try:
        worker = Worker(WorkerConfig(listen, args.name, args.threads, args.max_message_bytes, args.inbox,
                                     args.emulate))
    except Exception as exc:  # zmq.ZMQError for a taken port or a bad address
        raise UserInputError(f"cannot listen on {listen}: {exc}") from None
    from coinfer.runtime.local import READY_PREFIX

    print(f"{READY_PREFIX}{worker.endpoint}", flush=True)
    sys.stdout.flush()
    worker.serve_forever()
    return 0
