"""`coinfer capture MODEL`: turn a model into a graph JSON file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coinfer.cli.common import add_model_arguments, graph_from_args, print_json
from coinfer.files.graph_file import save_graph


def register(sub: Any) -> None:
    p = sub.add_parser("capture", help="turn a model into a coinfer graph (JSON)",
                       description="Capture MODEL into a graph of nodes (op, inputs, FLOPs, parameter bytes, "
                       "output shape and bytes, module path, block) and write it as versioned JSON.")
    add_model_arguments(p, graph_file=False)
    p.add_argument("-o", "--output", type=Path, metavar="graph.json", help="write the graph here")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    graph = graph_from_args(args)
    if args.output:
        save_graph(graph, args.output)
    summary = {"name": graph.name, "nodes": len(graph.nodes), "flops": graph.total_flops,
               "param_bytes": graph.total_param_bytes, "input_bytes": graph.input_bytes,
               "output_bytes": graph.output_bytes, "blocks": len(graph.blocks), "granularity": graph.granularity,
               "is_chain": graph.is_chain, "output": str(args.output) if args.output else None}
    if args.json:
        print_json(summary)
        return 0
    print(f"{graph.name}: {len(graph.nodes)} nodes ({graph.granularity} granularity), {len(graph.blocks)} blocks, "
          f"{graph.total_flops / 1e9:.3f} GFLOP, {graph.total_param_bytes / 1e6:.2f} MB of parameters, "
          f"input {graph.input_bytes / 1e6:.3f} MB, output {graph.output_bytes / 1e3:.1f} kB"
          f"{', a chain' if graph.is_chain else ', a DAG'}")
    if args.output:
        print(f"wrote {args.output}")
    return 0
