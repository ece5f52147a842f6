"""The adaptive policies, registered by name: `POLICIES` and `get_policy(name, **options)`.

- `static`: never switches; the baseline.
- `reap`: the adaptive edge-fog-cloud partitioner (Deng et al., arXiv 2605.09623): baseline runs,
  probe splits, then windows of 100 requests that refit, search every (i, j) split of a three-device
  chain by a weighted energy/latency score, and switch for a 3% gain.
- `partial`: after D3 (arXiv 2101.05952): every 20 requests, when the estimates move 20% or after a
  deadline miss, adjust the cuts of the plan in use (`hpa_adjust`); switch for a 3% gain.
- `resolve`: the same triggers, but a full re-solve with a registered solver.

Options are keyword arguments of each policy's dataclass (strings are converted, so a command line
can pass `hysteresis=0.05`); an unknown name or option is a UserInputError listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from coinfer.adapt.policies.partial import PartialPolicy
from coinfer.adapt.policies.reap import ReapPolicy
from coinfer.adapt.policies.resolve import ResolvePolicy
from coinfer.adapt.policies.static import StaticPolicy
from coinfer.adapt.policy import Policy, PolicyFactory
from coinfer.errors import UserInputError

POLICIES: Mapping[str, PolicyFactory] = {
    "static": StaticPolicy,
    "reap": ReapPolicy,
    "partial": PartialPolicy,
    "resolve": ResolvePolicy,
}


def get_policy(name: str, **options: Any) -> Policy:
    """The policy `name` with `options`; raises UserInputError naming the valid names or options."""
    factory = _factory(name)
    fields = option_names(name)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "none"
        raise UserInputError(f"policy {name!r} has no option {', '.join(unknown)}; its options: {valid}")
    hints = typing.get_type_hints(factory)
    converted = {key: _convert(name, key, value, hints[key]) for key, value in options.items()}
    policy: Policy = factory(**converted)
    return policy


def option_names(name: str) -> tuple[str, ...]:
    """The options policy `name` takes, in declaration order; raises UserInputError for an unknown name."""
    return tuple(f.name for f in dataclasses.fields(_factory(name)) if f.init)  # type: ignore[arg-type]


def _factory(name: str) -> PolicyFactory:
    factory = POLICIES.get(name)
    if factory is None:
        raise UserInputError(f"unknown policy {name!r}; policies: {', '.join(POLICIES)}")
    return factory


def _convert(policy: str, option: str, value: Any, hint: Any) -> Any:
    """A string from a command line turned into the option's type (int, float; tuples of floats)."""
    if not isinstance(value, str):
        return value
    kinds = [hint] if typing.get_origin(hint) is tuple else [k for k in typing.get_args(hint) or (hint,)]
    try:
        if typing.get_origin(hint) is tuple:
            return tuple(float(v) for v in value.split(","))
        if int in kinds:
            return int(value)
        if float in kinds:
            return float(value)
    except ValueError:
        raise UserInputError(f"option {option} of policy {policy!r} should be {_kind(hint)}, got {value!r}") from None
    return value


def _kind(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "comma-separated numbers"
    return " or ".join(getattr(k, "__name__", str(k)) for k in typing.get_args(hint) or (hint,))
