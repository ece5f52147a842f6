"""`coinfer worker`: a long-running process that serves the stages coordinators deploy to it."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path
from typing import Any

from coinfer.cli.common import cache_dir, parse_bytes
from coinfer.errors import UserInputError
from coinfer.runtime import wire

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="serve stages of plans to coordinators (coinfer run --workers ...)",
                       description="Listen for deployments and requests. An authorised coordinator (coinfer run) "
                       "deploys a plan's stages here with their weights; the worker computes and sends its outputs "
                       "straight to the workers that read them. It needs no model files: programs and weights "
                       "arrive with the deployment (docs/security.md says who may send what).")
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="control address (tcp:// optional; port 0 picks a free port, printed at start)")
    p.add_argument("--data-port", type=int, metavar="PORT",
                   help="port of the data socket, for tensors (default: the control port + 1; any with port 0)")
    p.add_argument("--name", required=True, help="this worker's name (shown in errors and stats)")
    p.add_argument("--key", metavar="NAME.key_secret", help="this worker's CURVE key pair (coinfer keys new NAME)")
    p.add_argument("--authorized-keys", metavar="PATH", help="the client public keys (a NAME.key file or a "
                   "directory of them) that may deploy here; read again when it changes, so deleting a key revokes it")
    p.add_argument("--insecure", action="store_true", help="serve without keys or encryption even on a "
                   "non-loopback address: anyone who reaches the ports can deploy, run and stop stages")
    p.add_argument("--threads", type=int, default=1, help="compute threads (default 1)")
    p.add_argument("--emulate", metavar="DEVICE", help="hold every stage for the time the catalogued DEVICE's "
                   "roofline predicts (e.g. rpi4b; see coinfer devices); reports say emulation is on")
    p.add_argument("--max-message-bytes", type=parse_bytes, default=wire.DEFAULT_MAX_PAYLOAD_BYTES, metavar="BYTES",
                   help="largest tensor accepted (default 1GiB)")
    p.add_argument("--inbox", type=int, default=64, help="tensors queued for computing before the worker "
                   "stops reading them (backpressure; default 64)")
    p.add_argument("--cache-dir", metavar="DIR", help="where weight blobs are kept between deployments (default "
                   "$XDG_CACHE_HOME/coinfer/worker/NAME or ~/.cache/coinfer/worker/NAME)")
    p.add_argument("--cache-bytes", type=parse_bytes, default=4 << 30, metavar="BYTES",
                   help="blobs kept beyond what deployments hold (default 4GiB)")
    p.add_argument("--memory-bytes", type=parse_bytes, metavar="BYTES",
                   help="memory deployments may use (default: what the machine has available); a deployment that "
                   "needs more is refused before anything is loaded")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from coinfer.runtime.local import READY_PREFIX
    from coinfer.runtime.security import AuthorizedKeys, load_keypair
    from coinfer.runtime.worker import Worker, WorkerConfig

    listen = args.listen if args.listen.startswith("tcp://") else f"tcp://{args.listen}"
    host = listen.removeprefix("tcp://").rpartition(":")[0]
    if args.threads < 1 or args.inbox < 1:
        raise UserInputError("--threads and --inbox must be positive")
    keys = authorized = None
    if args.key or args.authorized_keys:
        if not (args.key and args.authorized_keys):
            raise UserInputError("give --key (this worker's NAME.key_secret) and --authorized-keys (the clients' "
                                 "public keys) together; make them with coinfer keys new")
        if args.insecure:
            raise UserInputError("--insecure and --key contradict each other; give one")
        keys, authorized = load_keypair(args.key), AuthorizedKeys(args.authorized_keys)
    elif not _loopback(host) and not args.insecure:
        raise UserInputError(f"refusing to listen on {host} without keys: anyone who reaches it could deploy, run "
                             "and stop stages here. Give --key and --authorized-keys (coinfer keys new NAME --dir "
                             "keys), or --insecure on a network you trust")
    elif keys is None:
        log.warning("worker %s serves without keys or encryption (%s)", args.name,
                    "--insecure" if args.insecure else "loopback only")
    if args.emulate:
        from coinfer.profile.catalog import device_spec

        device_spec(args.emulate)  # an unknown device fails now, not at the first deployment
    data = None if args.data_port is None else f"tcp://{host}:{args.data_port}"
    folder = Path(args.cache_dir) if args.cache_dir else cache_dir(args) / "worker" / args.name
    limits = wire.Limits(max_payload_bytes=args.max_message_bytes)
    config = WorkerConfig(listen, args.name, folder, data, args.threads, limits, args.inbox, args.emulate,
                          args.cache_bytes, args.memory_bytes, keys, authorized)
    _preload_executor()
    try:
        worker = Worker(config)
    except Exception as exc:  # zmq.ZMQError for a taken port or a bad address
        raise UserInputError(f"cannot listen on {listen} (data: {data or 'control port + 1'}): {exc}") from None
    print(f"{READY_PREFIX}{worker.endpoint}", flush=True)
    print(f"coinfer worker {args.name}: data on {worker.data_endpoint}, "
          f"{'CURVE keys' if keys is not None else 'no keys'}, blob cache {folder}", file=sys.stderr, flush=True)
    worker.serve_forever()
    return 0


def _preload_executor() -> None:
    """Import PyTorch's stage runner before listening, not at the first deployment: importing torch
    holds the interpreter for a second or two, and a worker that did so while serving would miss
    heartbeats and be declared down (docs/failures.md). ONNX Runtime stays lazy (most workers run
    PyTorch programs, and it costs memory)."""
    try:
        import coinfer.runtime.torch_stages  # noqa: F401
    except ImportError:  # no torch here: this worker serves ONNX stages only
        log.info("PyTorch is not installed; this worker can serve ONNX stages only")


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
