"""Every call into HiGHS goes through here, so that what HiGHS prints never reaches standard output.

scipy's `milp` runs HiGHS with its log switched off (`disp=False`), yet some of HiGHS's C++ code
writes to file descriptor 1 directly: `coinfer plan --json` was seen to print
`HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();` before its JSON, so the
output did not parse (issue 21). Python-level redirection (`contextlib.redirect_stdout`) cannot
catch a native write, so while HiGHS runs, descriptor 1 points at standard error (descriptor 2):
whatever it prints is kept for the user on stderr and stdout carries only coinfer's own output.

Descriptor 1 is process-wide: a Python thread that prints while a solve runs prints to stderr too.
The lock keeps two solving threads from restoring each other's descriptor out of order.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from scipy.optimize import OptimizeResult
from scipy.optimize import milp as _scipy_milp

_REDIRECT_LOCK = threading.RLock()


@contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Point descriptor 1 at descriptor 2 for the duration (Python's own buffers flushed first)."""
    with _REDIRECT_LOCK:
        try:
            sys.stdout.flush()
            saved = os.dup(1)
        except (OSError, ValueError):  # no descriptor 1 (a closed stdout): nothing to protect
            yield
            return
        try:
            os.dup2(2, 1)
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def milp(*args: Any, **kwargs: Any) -> OptimizeResult:
    """scipy.optimize.milp, with HiGHS's native output sent to stderr (see the module docstring)."""
    with native_stdout_to_stderr():
        return _scipy_milp(*args, **kwargs)
