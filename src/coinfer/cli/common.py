"""Arguments shared by several commands, and how they turn into a Graph or a Problem."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
from pathlib import Path

from coinfer.errors import UserInputError
from coinfer.files.graph_file import graph_from_dict, graph_to_dict, load_graph
from coinfer.graph import Graph

log = logging.getLogger(__name__)
# Part of the cache key of captured graphs: raised when capture records more (2: param_read_bytes),
# so a graph cached by an older coinfer is captured again rather than read without it.
CAPTURE_FORMAT = 2


def cache_dir(args: argparse.Namespace) -> Path:
    """--cache-dir, else $XDG_CACHE_HOME/coinfer, else ~/.cache/coinfer."""
    if getattr(args, "cache_dir", None):
        return Path(args.cache_dir)
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "coinfer"


def add_model_arguments(p: argparse.ArgumentParser, *, graph_file: bool = True) -> None:
    what = "MODEL spec or graph.json" if graph_file else "MODEL spec"
    p.add_argument("model", metavar="MODEL", help=f"{what}: torchvision:NAME, hf:NAME, export:PATH, onnx:PATH, "
                   "python:MODULE:CALLABLE" + (", or a graph JSON file" if graph_file else ""))
    g = p.add_argument_group("capture options (ignored for a graph file)")
    g.add_argument("--input-shape", type=parse_shape, metavar="1x3x224x224", help="example input shape")
    g.add_argument("--seq-len", type=int, metavar="N", help="sequence length for text models (default 128)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    g.add_argument("--layers", type=int, metavar="N", help="shrink a transformer to N layers (hf: models)")
    g.add_argument("--granularity", choices=["op", "block"], default="op",
                   help="one node per op, or one per named block a solver keeps whole (default op)")
    p.add_argument("--weights", metavar="FILE", help="the model's trained weights: a state dict as .safetensors, or "
                   "a .pt read weights-only; recorded (with its sha256) in the graph and plan, shipped at run time")
    p.add_argument("--cache-dir", metavar="DIR", help="where captured graphs and profiles are cached "
                   "(default $XDG_CACHE_HOME/coinfer or ~/.cache/coinfer)")
    p.add_argument("--no-cache", action="store_true", help="capture again even if a cached graph exists")


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} should look like 1x3x224x224") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"shape {text!r} needs positive dimensions, like 1x3x224x224")
    return dims


def graph_from_args(args: argparse.Namespace) -> Graph:
    """Load a graph file, or capture the MODEL spec (cached by spec and capture options); with
    --weights, the graph's source names that state dict."""
    graph = _graph(args)
    if getattr(args, "weights", None):
        from coinfer.capture.weights import with_weights

        graph = with_weights(graph, args.weights)
    return graph


def _graph(args: argparse.Namespace) -> Graph:
    model: str = args.model
    if model.endswith(".json") or (Path(model).is_file() and ":" not in model):
        graph = load_graph(model)
        if args.granularity == "block":
            from coinfer.graph import coarsen_to_blocks

            graph = coarsen_to_blocks(graph)
        return graph
    if ":" not in model:
        raise UserInputError(f"{model!r} is neither a graph JSON file nor a MODEL spec such as "
                             f"torchvision:resnet18 or hf:gpt2")
    options = {"spec": model, "input_shape": args.input_shape, "seq_len": args.seq_len, "seed": args.seed,
               "layers": args.layers, "granularity": args.granularity, "capture": CAPTURE_FORMAT}
    key = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:20]
    cached = cache_dir(args) / "graphs" / f"{key}.json"
    if cached.is_file() and not args.no_cache and not model.startswith(("export:", "onnx:", "python:")):
        log.info("using the cached graph %s", cached)
        return graph_from_dict(json.loads(cached.read_text()), cached)
    from coinfer.capture import capture

    graph = capture(model, input_shape=args.input_shape, seq_len=args.seq_len, seed=args.seed,
                    layers=args.layers, granularity=args.granularity)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(graph_to_dict(graph)))
    return graph


def print_json(doc: object) -> None:
    """Strict JSON on stdout: infinite or undefined numbers are written as the strings "inf"/"nan"."""
    print(json.dumps(_finite(doc), indent=1, allow_nan=False))


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


_BYTE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_bytes(text: str) -> int:
    """A byte count such as 4096, 512MB, 4GiB or 1.5G (decimal units; KiB, MiB, GiB binary)."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _BYTE_UNITS or float(match.group(1)) * _BYTE_UNITS[unit] < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count; write e.g. 4096, 512MB or 4GiB")
    return int(float(match.group(1)) * _BYTE_UNITS[unit])
