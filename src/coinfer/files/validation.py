"""Turn pydantic validation errors into one readable message naming the file and the field."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

_HINTS = {
    "extra_forbidden": "remove it or check its spelling against docs/formats.md",
    "missing": "add it",
    "greater_than_equal": "use a value that is not negative",
    "greater_than": "use a positive value",
    "less_than_equal": "use a smaller value",
}


def describe(error: ValidationError, where: str | Path) -> str:
    """One line per problem: `<file>: <field.path>: <pydantic message> (<what to do>)`."""
    lines = []
    for problem in error.errors():
        path = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        hint = _HINTS.get(problem["type"])
        got = problem.get("input")
        got_text = f"; got {got!r}" if problem["type"] != "missing" and not isinstance(got, dict) else ""
        line = f"{where}: {path}: {problem['msg']}{got_text}"
        lines.append(f"{line} ({hint})" if hint else line)
    return "\n".join(lines)
