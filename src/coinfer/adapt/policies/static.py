"""`static`: serve the deploy-time plan forever; the baseline every adaptive policy is measured against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from coinfer.adapt.policy import Decision, View


@dataclass(frozen=True)
class StaticPolicy:
    """Never switches (no options, no state)."""

    name: ClassVar[str] = "static"

    def initial_state(self, view: View) -> None:
        return None

    def decide(self, view: View, state: None) -> Decision:
        return Decision(None, state)
