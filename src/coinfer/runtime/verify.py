"""Comparing a distributed run's outputs with the unpartitioned model's, so that nothing wrong passes.

A comparison fails (`ok` is False) on a missing output, another shape or dtype, and on any NaN or
infinity in the run's outputs, whatever the model gives; a NaN never hides inside a maximum
(`max_abs_err` is NaN then, and `bit_identical` compares bytes). `within(tolerance)` is the
lossless tests' and `--verify`'s verdict: bit-identical, or every difference at most
`tolerance` times the output's scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Comparison:
    compared: int = 0  # outputs compared, over every request
    bit_identical: bool = True
    max_abs_err: float = 0.0
    output_scale: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.compared > 0 and not self.problems

    def within(self, tolerance: float) -> bool:
        return self.ok and (self.bit_identical or self.max_abs_err <= tolerance * self.output_scale)

    def add(self, got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], label: str = "") -> None:
        """Compare one request's outputs (`got`) with the model's (`expected`)."""
        where = f"{label}: " if label else ""
        for name, ref in expected.items():
            if name not in got:
                self._fail(f"{where}output {name!r} is missing")
                continue
            out = np.asarray(got[name])
            if out.shape != ref.shape or out.dtype != ref.dtype:
                self._fail(f"{where}output {name!r} is {out.dtype}{list(out.shape)}, the model's is "
                           f"{ref.dtype}{list(ref.shape)}")
                continue
            self.compared += 1
            self.bit_identical = self.bit_identical and out.tobytes() == ref.tobytes()
            if out.dtype.kind in "fc":
                bad = int(np.count_nonzero(~np.isfinite(out)))
                if bad:
                    self.problems.append(f"{where}output {name!r} holds {bad} NaN or infinite value(s)")
            if out.size:
                diff = float(np.max(np.abs(out.astype(np.float64) - ref.astype(np.float64))))
                self.max_abs_err = _worse(self.max_abs_err, diff)
                scale = float(np.max(np.abs(ref.astype(np.float64))))
                self.output_scale = _worse(self.output_scale, scale)
        extra = sorted(set(got) - set(expected))
        if extra:
            self._fail(f"{where}outputs {extra[:3]} are not the model's")

    def _fail(self, problem: str) -> None:
        self.problems.append(problem)
        self.bit_identical = False
        self.max_abs_err = math.inf if not math.isnan(self.max_abs_err) else self.max_abs_err

    def report(self) -> dict[str, object]:
        return {"max_abs_err": self.max_abs_err, "bit_identical": self.bit_identical and self.ok,
                "output_scale": self.output_scale, "verified": self.ok, "verify_problems": self.problems[:10]}


def _worse(a: float, b: float) -> float:
    """The larger, with NaN winning (Python's max(0.0, nan) is 0.0)."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return max(a, b)


def compare_all(runs: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]) -> Comparison:
    """One comparison over many (got, expected) pairs."""
    c = Comparison()
    for i, (got, expected) in enumerate(runs):
        c.add(got, expected, f"request {i + 1}")
    return c
