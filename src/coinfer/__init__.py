"""coinfer: cooperative DNN inference across end devices, edge servers and the cloud.

The flow: capture a model into a Graph, profile it, describe the devices in a Cluster, make a
Problem, plan (a placement of every node), and evaluate the plan's latency, energy, money,
reliability and throughput. See README.md for a tour.
"""

from __future__ import annotations

from coinfer.api import make_problem, plan, profile_on_workers

# Bound eagerly: the subpackage `coinfer.capture` would otherwise shadow the function of the same
# name once imported. It imports torch only when called.
from coinfer.capture import capture
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import Breakdown, evaluate
from coinfer.files.cluster_file import load_cluster
from coinfer.files.graph_file import load_graph, save_graph
from coinfer.files.plan_file import load_plan, save_plan
from coinfer.graph import Graph, Node
from coinfer.plan import Plan, parse_plan
from coinfer.problem import Constraints, Objective, Problem

__version__ = "0.1.0"

__all__ = [
    "Breakdown", "Cluster", "Constraints", "Device", "Graph", "Link", "Node", "Objective", "Plan", "Problem",
    "capture", "evaluate", "load_cluster", "load_graph", "load_plan", "make_problem", "parse_plan", "plan",
    "profile_on_workers", "save_graph", "save_plan",
]

