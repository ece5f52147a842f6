"""Who may talk to a worker: CURVE key pairs, the ZAP gate, and the sockets set up to use them.

ZeroMQ's CURVE (CurveZMQ: Curve25519 key exchange, then XSalsa20-Poly1305 on every frame; pyzmq's
libzmq carries libsodium) gives every connection two things: encryption, and a public key that
the server side checks in a ZAP handler before the connection carries a single message. pyzmq's
`ThreadAuthenticator` runs that handler; the policy it asks is a `Gate`:

- a worker's **control** socket (deploy, undeploy, shutdown, probe, weights) admits the client
  keys the worker was given (`--authorized-keys`, a public key file or a directory of them);
- its **data** socket (tensors) admits those client keys and the keys of the peers named by a
  deployment it holds or is preparing (an authorised client vouches for them in the deploy message).

The key an accepted message came with is its ZeroMQ `User-Id` (the z85 public key), so the
worker checks every message again (`Gate.is_client`, `Gate.peer_device`): a client key deleted
from the authorized directory is refused from its next message on, even on a connection that
was already open, and a peer may send only tensors of a deployment that names it.

Key files are pyzmq's certificate format (`NAME.key` public, `NAME.key_secret` both halves,
written by `coinfer keys new`). See docs/security.md for the threat model.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from coinfer.errors import KeyFileError

log = logging.getLogger(__name__)

Domain = Literal["control", "data"]
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, both halves z85-encoded (40 ASCII bytes each)."""

    public: bytes
    secret: bytes = field(repr=False)


def new_keypair() -> KeyPair:
    import zmq

    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


def write_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Create NAME.key and NAME.key_secret in `directory` (the secret readable by its owner only)."""
    import zmq.auth

    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"key name {name!r}: use a plain name such as edge or client")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    if public.exists() or secret.exists():
        raise KeyFileError(f"{public} or {secret} exists already; remove it first to replace the key")
    old = os.umask(0o077)  # the secret is never readable by others, not even for an instant
    try:
        zmq.auth.create_certificates(str(folder), name)
    finally:
        os.umask(old)
    public.chmod(0o644)
    return public, secret


def load_keypair(path: str | Path) -> KeyPair:
    """The key pair in a NAME.key_secret file."""
    import zmq.auth

    file = Path(path)
    if not file.is_file():
        raise KeyFileError(f"no key file at {file}; make one with: coinfer keys new NAME --dir DIR")
    try:
        public, secret = zmq.auth.load_certificate(str(file))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{file} is not a CURVE key file ({exc}); make one with coinfer keys new") from None
    if secret is None:
        raise KeyFileError(f"{file} holds only a public key; give the NAME{SECRET_SUFFIX} file of the pair")
    return KeyPair(public, secret)


def load_public_keys(path: str | Path) -> dict[str, bytes]:
    """Name -> public key, from one NAME.key file or every *.key file of a directory (name = stem)."""
    import zmq.auth

    where = Path(path)
    files = sorted(where.glob(f"*{PUBLIC_SUFFIX}")) if where.is_dir() else [where]
    if not where.exists():
        raise KeyFileError(f"no public key file or directory at {where}")
    keys: dict[str, bytes] = {}
    for file in files:
        try:
            public, _ = zmq.auth.load_certificate(str(file))
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"{file} is not a CURVE public key file ({exc})") from None
        keys[file.name.removesuffix(PUBLIC_SUFFIX).removesuffix(SECRET_SUFFIX)] = public
    return keys


class AuthorizedKeys:
    """The client keys at a path, read again whenever the file or directory changes (revocation)."""

    def __init__(self, path: str | Path | None = None, keys: Iterable[bytes] = ()) -> None:
        self.path = None if path is None else Path(path)
        self._fixed = frozenset(keys)
        self._keys: frozenset[bytes] = frozenset()
        self._stamp: tuple[float, int] | None = None
        self._lock = threading.Lock()
        if self.path is not None:
            self.current()  # a missing or broken path fails at start, not at the first connection

    def current(self) -> frozenset[bytes]:
        if self.path is None:
            return self._fixed
        with self._lock:
            stat = self.path.stat()
            stamp = (stat.st_mtime, stat.st_size)
            if stamp != self._stamp:
                self._keys = frozenset(load_public_keys(self.path).values())
                self._stamp = stamp
            return self._fixed | self._keys


class Gate:
    """The worker's admission policy for both sockets (see the module docstring). Thread-safe."""

    def __init__(self, clients: AuthorizedKeys) -> None:
        self.clients = clients
        self._peers: dict[int, dict[bytes, str]] = {}  # plan version -> peer key -> device
        # every peer key a deployment ever named: its keepalives and probes stay welcome after the
        # version is undeployed (a device the plan moved away from must still be heard coming back)
        self._known: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def admit(self, domain: Domain, key: bytes) -> bool:
        """Whether a connection presenting `key` (z85) may open on the `domain` socket."""
        if self.is_client(key):
            return True
        with self._lock:
            return domain == "data" and key in self._known

    def is_client(self, key: bytes) -> bool:
        try:
            return key in self.clients.current()
        except (OSError, KeyFileError) as exc:  # a half-written key file: refuse until it reads again
            log.warning("cannot read the authorized keys: %s", exc)
            return False

    def peer_device(self, plan_version: int, key: bytes) -> str | None:
        """The device the deployment `plan_version` knows `key` as, if it names it."""
        return self._snapshot().get(plan_version, {}).get(key)

    def any_peer_device(self, key: bytes) -> str | None:
        """The device a deployment named `key` as (for link probes and keepalives, which belong to
        no plan version); deployments since undeployed count."""
        with self._lock:
            return self._known.get(key)

    def allow_peers(self, plan_version: int, peers: Mapping[str, bytes]) -> None:
        with self._lock:
            self._peers[plan_version] = {key: device for device, key in peers.items()}
            self._known.update(self._peers[plan_version])

    def forget(self, plan_version: int) -> None:
        with self._lock:
            self._peers.pop(plan_version, None)

    def _snapshot(self) -> dict[int, dict[bytes, str]]:
        with self._lock:
            return dict(self._peers)


class _Provider:
    """pyzmq's credentials-provider interface: `callback(domain, key) -> bool`."""

    def __init__(self, gate: Gate, domain: Domain) -> None:
        self.gate, self.domain = gate, domain

    def callback(self, domain: str, key: bytes) -> bool:
        admitted = self.gate.admit(self.domain, key)
        if not admitted:
            log.warning("refused a %s connection from unknown key %s", self.domain, key.decode(errors="replace"))
        return admitted


def start_authenticator(context: Any, gate: Gate) -> Any:
    """A running ZAP handler for `context` that asks `gate`; started before any secure socket binds,
    since without a ZAP handler libzmq would admit every CURVE key."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(context, log=logging.getLogger("coinfer.runtime.zap"))
    auth.start()
    for domain in ("control", "data"):
        auth.configure_curve_callback(domain, _Provider(gate, domain))
    return auth


def serve_securely(socket: Any, keys: KeyPair, domain: Domain) -> None:
    """Make a socket about to bind a CURVE server whose clients the gate's `domain` policy admits."""
    socket.zap_domain = domain.encode()
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def connect_securely(socket: Any, keys: KeyPair, server_public: bytes) -> None:
    """Make a socket about to connect a CURVE client of the server with public key `server_public`."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = server_public


def sender_key(frame: Any) -> bytes | None:
    """The public key (z85) a received frame came with on a CURVE socket; None on a plain one."""
    try:
        user = frame.get("User-Id")
    except Exception:  # zmq.ZMQError: a plain (NULL) socket has no User-Id property
        return None
    return user.encode() if isinstance(user, str) and user else None
