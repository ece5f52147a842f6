"""MODEL spec strings: `torchvision:NAME`, `hf:NAME`, `export:PATH`, `onnx:PATH`,
`python:MODULE:CALLABLE`.

Parsing is pure string work (no torch), so a CLI can reject a mistyped spec before importing
anything heavy. Whether NAME exists in torchvision is checked where the model is built.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from coinfer.errors import ModelSpecError

SourceKind = Literal["torchvision", "hf", "export", "onnx", "python"]

SPEC_FORMS = (
    "torchvision:NAME (e.g. torchvision:resnet18)",
    "hf:NAME (gpt2, llama, bert or vit; random weights from the config, no download)",
    "export:PATH (a torch.export .pt2 file)",
    "onnx:PATH (an .onnx file)",
    "python:MODULE:CALLABLE (a callable returning (module, example_inputs))",
)
_KINDS: tuple[SourceKind, ...] = ("torchvision", "hf", "export", "onnx", "python")


@dataclass(frozen=True)
class ParsedSpec:
    """A MODEL spec split into its kind and target; `attr` is set only for python: specs."""

    kind: SourceKind
    target: str
    attr: str = ""

    @property
    def name(self) -> str:
        """A short model name for `Graph.name`: the model name, file stem or callable name."""
        if self.kind in ("export", "onnx"):
            return Path(self.target).stem
        return self.attr or self.target


def parse_spec(spec: str) -> ParsedSpec:
    """Split a MODEL spec; raise ModelSpecError listing the valid forms when it is malformed."""
    prefix, sep, rest = spec.partition(":")
    if not sep or prefix not in _KINDS:
        hint = _close(prefix, _KINDS)
        raise ModelSpecError(
            f"unknown MODEL spec {spec!r}{hint}; use one of: " + "; ".join(SPEC_FORMS)
        )
    if not rest:
        raise ModelSpecError(f"MODEL spec {spec!r} names no model; use one of: " + "; ".join(SPEC_FORMS))
    kind: SourceKind = prefix  # checked against _KINDS above
    if kind == "python":
        module, sep, attr = rest.rpartition(":")
        if not sep or not module or not attr:
            raise ModelSpecError(
                f"MODEL spec {spec!r}: write python:MODULE:CALLABLE, e.g. python:mypkg.models:build, "
                "where CALLABLE returns (torch.nn.Module, tuple of example input tensors)"
            )
        return ParsedSpec(kind, module, attr)
    if kind in ("export", "onnx") and not Path(rest).is_file():
        raise ModelSpecError(
            f"MODEL spec {spec!r}: no file at {rest!r} (relative to {Path.cwd()}); check the path"
        )
    return ParsedSpec(kind, rest)


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> ModelSpecError:
    """The error for a model name the source does not have, with close matches."""
    valid = sorted(valid)
    hint = _close(name, valid)
    shown = ", ".join(valid) if len(valid) <= 12 else ", ".join(valid[:12]) + f", ... ({len(valid)} in all)"
    return ModelSpecError(f"{kind} has no model {name!r}{hint}; valid names: {shown}")


def _close(word: str, choices: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""
