"""The import direction of DESIGN.md: planning and costing never need torch."""

from __future__ import annotations

import subprocess
import sys


def test_planning_and_costing_do_not_import_torch() -> None:
    code = (
        "import sys, coinfer, coinfer.cost, coinfer.solve, coinfer.cli, coinfer.files.plan_file, "
        "coinfer.profile.analytic, coinfer.profile.regression, coinfer.capture\n"
        "heavy = [m for m in ('torch', 'torchvision', 'transformers', 'onnx') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
