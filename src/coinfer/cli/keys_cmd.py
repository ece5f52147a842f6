"""`coinfer keys`: CURVE key pairs for workers and clients (docs/security.md)."""

from __future__ import annotations

import argparse
from typing import Any

from coinfer.errors import UserInputError


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help="make and list CURVE key pairs for workers and clients",
                       description="Each worker and each client has a key pair: NAME.key (public; give it to the "
                       "other side) and NAME.key_secret (keep it on its device, readable by its owner only).")
    inner = p.add_subparsers(dest="keys", required=True, metavar="ACTION")
    new = inner.add_parser("new", help="make key pairs NAME.key and NAME.key_secret",
                           description="Make one key pair per NAME in DIR. Copy each worker's NAME.key to the "
                           "clients (coinfer run --worker-keys DIR) and each client's to the workers "
                           "(coinfer worker --authorized-keys DIR).")
    new.add_argument("names", nargs="+", metavar="NAME", help="a device or client name, e.g. edge or laptop")
    new.add_argument("--dir", required=True, help="where to write the files")
    new.set_defaults(run=run_new)
    show = inner.add_parser("list", help="the public keys in a directory or file")
    show.add_argument("path", metavar="PATH", help="a NAME.key file or a directory of them")
    show.set_defaults(run=run_list)


def run_new(args: argparse.Namespace) -> int:
    from coinfer.runtime.security import write_keypair

    if len(set(args.names)) != len(args.names):
        raise UserInputError("the names repeat; give each once")
    for name in args.names:
        public, secret = write_keypair(args.dir, name)
        print(f"{name}: public {public}, secret {secret} (mode 600)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from coinfer.runtime.security import load_public_keys

    for name, key in sorted(load_public_keys(args.path).items()):
        print(f"{name}\t{key.decode()}")
    return 0
