"""The worker's content-addressed blob cache on disk: blobs arrive in chunks, are hashed, then kept.

A blob is written to `.partial-SHA-PID` as its chunks arrive, in order, while its sha256 is
computed; only when all its bytes have come and the digest equals its name is it renamed to
`SHA` (atomically, so two workers sharing a directory can receive the same blob at once). So a
file named by a hash always holds those bytes, a corrupted or forged blob never enters, and a
worker killed mid-transfer leaves only partial files, which the next start removes.

The cache outlives deployments and restarts (a redeploy sends nothing the disk has) and is kept
under `max_bytes` by dropping the least recently used blobs that no deployment holds. File names
are checked to be sha256 digests before any path is formed, so no message can name a path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from coinfer.errors import WireError
from coinfer.runtime.blobs import check_sha256

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"


@dataclass
class _Receiving:
    total_bytes: int
    file: BinaryIO
    path: Path
    received_bytes: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


class BlobCache:
    """Blobs by sha256 in `directory` (see the module docstring); used from one thread."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in directory.glob(f"{PARTIAL_PREFIX}*"):
            if not _alive(stale.name.rpartition("-")[2]):
                stale.unlink(missing_ok=True)
        self._receiving: dict[str, _Receiving] = {}

    def path(self, sha256: str) -> Path:
        return self.directory / check_sha256(sha256, "blob")

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def touch(self, sha256: str) -> None:
        """Mark a blob used now (the eviction order)."""
        os.utime(self.path(sha256))

    def receive(self, sha256: str, offset: int, total_bytes: int, chunk: memoryview) -> bool:
        """Append one chunk; True once the blob is complete and verified. WireError for a chunk out of
        order, past the end, or a finished blob whose bytes do not hash to its name."""
        check_sha256(sha256, "blob chunk")
        state = self._receiving.get(sha256)
        if state is None:
            if offset != 0:
                raise WireError(f"blob {sha256[:12]}: its first chunk starts at byte {offset}, not 0")
            partial = self.directory / f"{PARTIAL_PREFIX}{sha256}-{os.getpid()}"
            state = self._receiving[sha256] = _Receiving(total_bytes, partial.open("wb"), partial)
        if total_bytes != state.total_bytes or offset != state.received_bytes:
            self.abandon(sha256)
            raise WireError(f"blob {sha256[:12]}: a chunk at byte {offset} of {total_bytes}, expected byte "
                            f"{state.received_bytes} of {state.total_bytes}; send it again from the start")
        if offset + chunk.nbytes > total_bytes:
            self.abandon(sha256)
            raise WireError(f"blob {sha256[:12]}: a chunk of {chunk.nbytes} bytes at {offset} runs past its "
                            f"{total_bytes} bytes")
        state.file.write(chunk)
        state.digest.update(chunk)
        state.received_bytes += chunk.nbytes
        if state.received_bytes < total_bytes:
            return False
        state.file.close()
        del self._receiving[sha256]
        if state.digest.hexdigest() != sha256:
            state.path.unlink(missing_ok=True)
            raise WireError(f"blob {sha256[:12]}: its {total_bytes} bytes hash to {state.digest.hexdigest()[:12]}, "
                            "not to its name; it was corrupted or forged in transit and is dropped")
        os.replace(state.path, self.path(sha256))
        return True

    def abandon(self, sha256: str) -> None:
        state = self._receiving.pop(sha256, None)
        if state is not None:
            state.file.close()
            state.path.unlink(missing_ok=True)

    def receiving(self) -> set[str]:
        return set(self._receiving)

    def free_disk_bytes(self) -> int:
        return shutil.disk_usage(self.directory).free

    def trim(self, keep: set[str]) -> None:
        """Drop least recently used blobs outside `keep` until the cache is under `max_bytes`."""
        files = [(f.stat(), f) for f in self.directory.iterdir() if not f.name.startswith(PARTIAL_PREFIX)]
        used = sum(s.st_size for s, _ in files)
        for stat, file in sorted(files, key=lambda sf: sf[0].st_mtime):
            if used <= self.max_bytes:
                break
            if file.name not in keep:
                file.unlink(missing_ok=True)
                used -= stat.st_size
                log.info("blob cache: dropped %s (%d bytes, unused since %s)", file.name[:12], stat.st_size,
                         time.ctime(stat.st_mtime))


def _alive(pid: str) -> bool:
    """Whether the process that wrote a partial file still runs (it may be receiving it)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
