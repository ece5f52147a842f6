"""Stages of a PyTorch program on a worker: the aten calls a deployment carries, run over its shipped weights.

Nothing here imports the model or reads a file a message names: every call's target is resolved
against `torch.ops.aten` when the deployment is built (coinfer.runtime.aten_calls), every weight
is a tensor of the deployment's own blobs, and a call or weight the stages need but the
deployment lacks refuses the deployment. At run time a stage is its ops in program order, each
called with its decoded arguments: values computed earlier in the stage or received, and weights.
A value is let go right after the last op of the stage that reads it (unless the stage hands it
on), as eager PyTorch frees a temporary: without that a stage would hold every intermediate it
ever made until it returned, which measured 40-60 MB extra on a resnet50 stage against the cost
model's working set (the largest single op's inputs and output). Values cross the stage boundary
as numpy arrays that share memory with the tensors, except where a received frame is read-only
(it is copied once).

State (a causal LM's KV cache, `{"state": REF}` in the calls) is neither: the session's tensor,
which the caller passes to `run` and the ops write in place (coinfer.runtime.worker.sessions).
`state_makers` says how to make each state tensor this device's stages touch (zeros of the
declared shape and dtype).
"""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from coinfer.errors import WireError
from coinfer.runtime.aten_calls import Ref, decode_args, resolve_target
from coinfer.runtime.program import ProgramIndex
from coinfer.runtime.routing import RunStage
from coinfer.runtime.stages import StageFailure


class _Call:
    __slots__ = ("args", "kwargs", "label", "owner", "target")

    def __init__(self, target: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], owner: str) -> None:
        self.target, self.args, self.kwargs, self.owner = target, args, kwargs, owner
        self.label = "getitem" if target is operator.getitem else str(getattr(target, "overloadpacket", target))


class TorchStages:
    """The stages of one deployment (see the module docstring)."""

    def __init__(self, index: ProgramIndex, calls: Mapping[str, Any], weights: Mapping[str, Any],
                 stages: Sequence[RunStage], threads: int,
                 states: Mapping[str, tuple[tuple[int, ...], Any]] | None = None) -> None:
        import torch

        self.torch = torch
        # CPU kernels split reductions by thread: the reference runs at the workers' count, so must they
        torch.set_num_threads(threads)
        self.index = index
        self.weights = weights
        self.states = dict(states or {})  # state ref -> (shape, torch dtype)
        self.state_makers: dict[str, Callable[[], Any]] = {
            name: functools.partial(torch.zeros, shape, dtype=dtype) for name, (shape, dtype) in self.states.items()}
        owner = {op.name: op.owner for op in index.ops}
        self.calls: dict[str, _Call] = {}
        self.frees: dict[int, list[tuple[str, ...]]] = {}  # stage index -> per op, the values done after it
        for stage in stages:
            for name in stage.ops:
                self.calls[name] = self._decode(name, calls.get(name), owner[name])
            self.frees[stage.index] = self._frees(stage)

    def _frees(self, stage: RunStage) -> list[tuple[str, ...]]:
        last: dict[str, int] = {}
        for i, name in enumerate(stage.ops):
            last[name] = i  # a value nothing reads is done right after the op that made it
            call = self.calls[name]
            for ref in _refs([call.args, call.kwargs]):
                if ref.kind == "value":
                    last[ref.name] = i
        done: list[list[str]] = [[] for _ in stage.ops]
        for value, i in last.items():
            if value not in stage.keep:
                done[i].append(value)
        return [tuple(d) for d in done]

    def _decode(self, name: str, doc: Any, owner: str) -> _Call:
        where = f"the call of op {name!r} (node {owner!r})"
        if not isinstance(doc, dict) or set(doc) != {"target", "args", "kwargs"}:
            raise WireError(f"{where}: the deployment holds no call with target, args and kwargs for it")
        if not isinstance(doc["args"], list) or not isinstance(doc["kwargs"], dict):
            raise WireError(f"{where}: args must be a list and kwargs an object")
        args = decode_args(doc["args"], where)
        kwargs = {str(k): decode_args(v, where) for k, v in doc["kwargs"].items()}
        for ref in _refs([args, kwargs]):
            if ref.kind == "weight" and ref.name not in self.weights:
                raise WireError(f"{where} reads weight {ref.name!r}, which the deployment does not ship")
            if ref.kind == "state" and ref.name not in self.states:
                raise WireError(f"{where} keeps state {ref.name!r}, which the deployment does not declare")
        return _Call(resolve_target(doc["target"], where), args, kwargs, owner)

    def run(self, stage: RunStage, values: Mapping[str, np.ndarray],
            node_s: dict[str, float] | None = None, state: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        torch = self.torch
        local: dict[str, Any] = {}

        def lookup(ref: Ref) -> Any:
            if ref.kind == "weight":
                weight = self.weights[ref.name]
                return weight.clone() if ref.copy else weight
            if ref.kind == "state":
                if state is None or ref.name not in state:
                    raise WireError(f"stage {stage.label} keeps state {ref.name!r} between the steps of a session, "
                                    "and this request belongs to none")
                return state[ref.name]
            if ref.name not in local:
                value = values[ref.name]
                local[ref.name] = torch.from_numpy(value if value.flags.writeable else value.copy())
            return local[ref.name]

        frees = self.frees[stage.index]
        with torch.inference_mode():
            for i, name in enumerate(stage.ops):
                call = self.calls[name]
                start = time.perf_counter() if node_s is not None else 0.0
                try:
                    local[name] = call.target(*_fill(call.args, lookup),
                                              **{k: _fill(v, lookup) for k, v in call.kwargs.items()})
                except Exception as exc:  # any op error is the stage's failure, reported by node
                    raise StageFailure(call.owner, call.label, exc) from exc
                if node_s is not None:  # an op's time is its node's (a node is one or more ops)
                    node_s[call.owner] = node_s.get(call.owner, 0.0) + time.perf_counter() - start
                for value in frees[i]:
                    local.pop(value, None)
        return {v: _to_numpy(local[v], v) for v in stage.keep}


def _fill(arg: Any, lookup: Callable[[Ref], Any]) -> Any:
    """An argument tree with its Refs looked up. A module function, not a closure calling itself: such a
    closure is a reference cycle, which would keep every tensor of a run alive until the cyclic garbage
    collector ran (measured: a resnet50 stage's worker grew by hundreds of MB over 15 requests)."""
    if isinstance(arg, Ref):
        return lookup(arg)
    if isinstance(arg, list):
        return [_fill(a, lookup) for a in arg]
    return arg


def _refs(tree: Any) -> list[Ref]:
    if isinstance(tree, Ref):
        return [tree]
    if isinstance(tree, list | tuple):
        return [r for item in tree for r in _refs(item)]
    if isinstance(tree, dict):
        return [r for item in tree.values() for r in _refs(item)]
    return []


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if not hasattr(value, "numpy"):
        raise StageFailure(name, "send", TypeError(f"value {name} is a {type(value).__name__}, not a tensor; "
                                                   "place the cut elsewhere"))
    return np.asarray(value.detach().contiguous().numpy())
