"""How much memory a worker has and uses, read from Linux's /proc and cgroup files."""

from __future__ import annotations

import contextlib
from pathlib import Path

_CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")
_CGROUP_USAGE = Path("/sys/fs/cgroup/memory.current")


def resident_bytes(pid: int | str = "self") -> int:
    """VmRSS of a process: the memory it holds (anonymous and mapped file pages it touched)."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_resident_bytes(pid: int | str = "self") -> int:
    return _status_kib(pid, "VmHWM") * 1024


def available_bytes() -> int:
    """What the machine (or this process's cgroup, if it is tighter) can still give."""
    available = _meminfo_kib("MemAvailable") * 1024
    try:
        limit = _CGROUP_LIMIT.read_text().strip()
        if limit != "max":
            available = min(available, int(limit) - int(_CGROUP_USAGE.read_text()))
    except (OSError, ValueError):
        pass  # no cgroup v2 files: the machine's figure stands
    return max(0, available)


def _status_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _meminfo_kib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def trim() -> None:
    """Return the free memory at the top of glibc's heaps to the kernel (after a deployment is built,
    its parsing has left megabytes of freed Python objects behind)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
