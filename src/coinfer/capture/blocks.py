"""Which module a node's block is: named groups of nodes a solver may keep whole.

The rule, applied to the module stack of each node from the outermost module inwards (the
outermost match wins): a module is a block when it is
  * not the root, not a leaf (it has child modules), not a container (nn.Sequential,
    nn.ModuleList, nn.ModuleDict or a subclass), and
  * either its parent is a container (`layer1.0`, `features.3`, `transformer.h.0`) or its class
    name contains Inception, Block, Layer, Residual, Bottleneck, Fire or MBConv (googlenet's
    `inception3a`, inception_v3's `Mixed_5b`).
A module may also say so itself (`coinfer_container = True`: not a block, its children may be;
`coinfer_block = True`: a block), as coinfer.capture.tensor_parallel's layers and shards do.
This finds ResNet BasicBlock/Bottleneck, MobileNet InvertedResidual, Inception modules, DenseNet
layers, ConvNeXt/EfficientNet/RegNet blocks and transformer layers (GPT2Block, BertLayer,
ViTLayer, torchvision EncoderBlock, Swin blocks); stems, heads and the glue between blocks stay
single nodes.

With the eager module at hand the facts come from `named_modules()`. A loaded `export:` program
has only the class names in its nn_module_stack metadata; then classes are imported by name,
a module is a leaf when no node sits deeper inside it, and a parent missing from every stack
(a ModuleList is never called) is taken to be a container when the child's name is an index.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_BLOCK_CLASS = re.compile(r"Inception|Block|Layer|Residual|Bottleneck|Fire|MBConv")
_CONTAINER_NAMES = frozenset({"Sequential", "ModuleList", "ModuleDict"})

Stack = Sequence[tuple[str, str]]  # (module path, class qualified name), outermost first


@dataclass(frozen=True)
class ModuleFacts:
    """What the block rule needs to know about one module."""

    class_name: str
    is_leaf: bool
    is_container: bool
    says_block: bool = False  # the module says it is one (a tensor-parallel shard, a leaf of many ops)


def facts_from_module(root: Any) -> dict[str, ModuleFacts]:
    torch = importlib.import_module("torch")
    containers = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
    # a module may say it is a container of blocks, or a block (coinfer.capture.tensor_parallel's layers, shards)
    return {
        path: ModuleFacts(type(m).__name__, not any(True for _ in m.children()),
                          isinstance(m, containers) or getattr(m, "coinfer_container", False) is True,
                          getattr(m, "coinfer_block", False) is True)
        for path, m in root.named_modules(remove_duplicate=False)
    }


def facts_from_stacks(stacks: Iterable[Stack]) -> dict[str, ModuleFacts]:
    classes = {path: qualname for stack in stacks for path, qualname in stack}
    return {
        path: ModuleFacts(qualname.rpartition(".")[2],
                          not any(other.startswith(path + ".") for other in classes),
                          _is_container_class(qualname))
        for path, qualname in classes.items()
    }


def block_of(stack: Stack, facts: Mapping[str, ModuleFacts]) -> str | None:
    """The block a node with this module stack belongs to, or None."""
    for path, _ in stack:
        if path and _is_block(path, facts):
            return path
    return None


def _is_block(path: str, facts: Mapping[str, ModuleFacts]) -> bool:
    f = facts.get(path)
    if f is not None and f.says_block:
        return True
    if f is None or f.is_leaf or f.is_container:
        return False
    parent_path, _, last = path.rpartition(".")
    parent = facts.get(parent_path)
    parent_is_container = parent.is_container if parent is not None else last.isdigit()
    return parent_is_container or bool(_BLOCK_CLASS.search(f.class_name))


def _is_container_class(qualname: str) -> bool:
    module_name, _, cls_name = qualname.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
        torch = importlib.import_module("torch")
        return issubclass(cls, (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict))
    except (ImportError, AttributeError, TypeError, ValueError):
        return cls_name in _CONTAINER_NAMES
