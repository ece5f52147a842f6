"""`--json` output stays machine-readable: stdout carries the JSON document and nothing else.

HiGHS once printed a line of its own to file descriptor 1 before `coinfer plan --json`'s JSON
(issue 21); `capfd` captures at the descriptor, so a native write like that one fails these tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from coinfer.cli import main
from coinfer.solve import SOLVERS
from coinfer.solve.highs import native_stdout_to_stderr


def small_cnn(residual: bool = True) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Convolutions the tiling solvers can tile, a residual the DAG solvers see (not for chain-dp,
    which takes chains), a classifier head."""

    class SmallCnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.body = nn.Conv2d(8, 8, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.stem(x))
            x = self.pool(x + torch.relu(self.body(x)) if residual else torch.relu(self.body(x)))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return SmallCnn().eval(), (torch.randn(1, 3, 64, 64),)


def small_chain_cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return small_cnn(residual=False)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name in ("small_cnn", "small_chain_cnn"):
        out[name] = tmp_path_factory.mktemp("graph") / f"{name}.json"
        assert main(["capture", f"python:{__name__}:{name}", "-o", str(out[name])]) == 0
    return out


# the brute-force searches take clusters small enough to enumerate; the rest six devices
SMALL_CLUSTER = {"brute-force": "dads-wifi", "tiling-brute-force": "one-to-multiple"}


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_every_solver_prints_only_json(solver: str, graphs: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    cluster = SMALL_CLUSTER.get(solver, "camera-edge-cloud")
    graph = graphs["small_chain_cnn" if solver == "chain-dp" else "small_cnn"]
    code = main(["plan", str(graph), "--cluster", cluster, "--solver", solver,
                 "--objective", "throughput" if solver == "pipeline-dp" else "latency", "--json"])
    out = capfd.readouterr().out
    assert code == 0
    doc = json.loads(out)  # the whole of stdout, not its last line
    assert doc["solver"] == solver
    assert set(doc["placement"]) >= {"stem", "fc"}


def test_compare_prints_only_json(graphs: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    code = main(["compare", str(graphs["small_cnn"]), "--cluster", "camera-edge-cloud",
                 "--solvers", "ilp,pipeline-dp,coedge", "--json"])
    out = capfd.readouterr().out
    assert code == 0
    json.loads(out)


def test_a_native_write_during_a_solve_goes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    print("before", flush=True)
    with native_stdout_to_stderr():
        os.write(1, b"HighsMipSolverData::transformNewIntegerFeasibleSolution\n")  # as C++ code writes
    print("after", flush=True)
    captured = capfd.readouterr()
    assert captured.out == "before\nafter\n"
    assert "HighsMipSolverData" in captured.err
