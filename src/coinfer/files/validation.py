"""Turn pydantic validation errors into one readable message naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from coinfer.errors import UserInputError

Schema = TypeVar("Schema", bound=BaseModel)

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


def read_json(path: Path, error: type[UserInputError], what: str) -> Any:
    """The parsed JSON of `path`; an unreadable file or bad JSON raises `error` naming the file."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} file ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def check_version(doc: Any, supported: int, where: str | Path, error: type[UserInputError], fix: str) -> None:
    """Refuse a document of another format version before validating its fields."""
    if isinstance(doc, dict) and doc.get("version") not in (None, supported):
        raise error(f"{where}: version {doc.get('version')!r} is not supported; this coinfer reads version "
                    f"{supported} ({fix} or upgrade coinfer)")


def validate(schema: type[Schema], doc: Any, where: str | Path, error: type[UserInputError]) -> Schema:
    """`doc` parsed by `schema`, or `error` listing every problem by file and field."""
    try:
        return schema.model_validate(doc)
    except ValidationError as exc:
        raise error(describe(exc, where)) from None
