"""The cost model: `evaluate(plan, problem)` and the equations it is made of (`terms`)."""

from coinfer.cost.breakdown import Breakdown, StageCost, Transfer, Violation
from coinfer.cost.evaluate import evaluate, list_transfers, memory_need_bytes

__all__ = ["Breakdown", "StageCost", "Transfer", "Violation", "evaluate", "list_transfers", "memory_need_bytes"]
