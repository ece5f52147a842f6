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


# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
RETURN_ABOVE_BYTES = 256 << 10


def return_freed_memory_promptly() -> bool:
    """Make glibc hand every block above `RETURN_ABOVE_BYTES` back to the kernel when it is freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
    activations of a few MB come from its heaps and stay there, spread over one heap per thread:
    a worker's memory then sits well above the tensors it holds. A fixed threshold keeps it at what
    is live, for a page fault per page of each large tensor (measured: the VGG16 origin stage's peak
    fell from 692 to 653 MB; time within noise). False where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, RETURN_ABOVE_BYTES)
                    and libc.mallopt(_M_TRIM_THRESHOLD, RETURN_ABOVE_BYTES))
    except (OSError, AttributeError):
        return False


def trim() -> None:
    """Return the free memory at the top of glibc's heaps to the kernel (after a deployment is built,
    its parsing has left megabytes of freed Python objects behind)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
