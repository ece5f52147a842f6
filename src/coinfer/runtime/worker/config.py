"""How a worker is set up: addresses, limits, cache, memory, keys. Parsed once by `coinfer worker`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coinfer.runtime import wire
from coinfer.runtime.security import AuthorizedKeys, KeyPair

DEFAULT_CACHE_BYTES = 4 << 30  # blobs kept on disk beyond what deployments hold


@dataclass(frozen=True)
class WorkerConfig:
    listen: str  # the control socket, tcp://HOST:PORT (port 0 picks a free one)
    name: str
    cache_dir: Path  # the blob cache (coinfer.runtime.worker.blob_cache)
    data_listen: str | None = None  # the data socket; None: the same host, the control port + 1 (any with 0)
    threads: int = 1
    limits: wire.Limits = wire.DEFAULT_LIMITS
    inbox_size: int = 64  # tensors waiting for the compute thread; the bound that gives backpressure
    emulate: str | None = None  # a catalogued device whose predicted stage times this worker keeps
    cache_bytes: int = DEFAULT_CACHE_BYTES
    memory_bytes: int | None = None  # what deployments may use; None: what the machine has available
    keys: KeyPair | None = None  # None: no CURVE (--insecure)
    authorized: AuthorizedKeys | None = None  # the client keys, with `keys`

    @property
    def secure(self) -> bool:
        return self.keys is not None
