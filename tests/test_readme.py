"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs(capsys) -> None:  # type: ignore[no-untyped-def]
    text = README.read_text()
    block = re.search(r"## From Python\n\n```python\n(.*?)```", text, re.S)
    assert block is not None, "README lost its Python example"
    exec(compile(block.group(1), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "@phone | " in printed and " ms" in printed
