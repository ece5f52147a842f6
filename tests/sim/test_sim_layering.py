"""The simulator sits beside coinfer.adapt, above cost and solve: it never needs the runtime, the CLI or torch."""

from __future__ import annotations

import subprocess
import sys


def test_the_simulator_imports_neither_the_runtime_nor_the_cli() -> None:
    code = (
        "import sys, coinfer.sim, coinfer.sim.plots\n"
        "bad = [m for m in sys.modules if m.startswith(('coinfer.runtime', 'coinfer.cli', 'torch', 'zmq'))]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
