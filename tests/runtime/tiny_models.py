"""Small real PyTorch models for the runtime's fast tests (importable by worker processes).

`cnn` has a residual block and two parallel branches, so cuts can fall inside DAG structure;
`tokens` embeds token ids, so an out-of-range id makes a stage raise at run time; `rows` reads
its first input dimension as a sequence (micro-batching must refuse it); `nans` outputs NaN
(verification must fail on it).
"""

from __future__ import annotations

import torch
from torch import nn


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.left = nn.Conv2d(8, 4, 1)
        self.right = nn.Conv2d(8, 4, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.block(x)
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(x.mean(dim=(2, 3)))


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.proj = nn.Linear(8, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(ids)).relu().sum(dim=1)


def cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return Branchy().eval(), (torch.randn(1, 3, 16, 16),)


def tokens() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return Tokens().eval(), (torch.randint(0, 50, (1, 6)),)


class SumsOverRows(nn.Module):
    """Its first input dimension is a sequence, not a batch: the output sums over it."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).relu().sum(dim=0)


def rows() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return SumsOverRows().eval(), (torch.randn(6, 8),)


class Overflows(nn.Module):
    """Its output is NaN whatever the input: --verify must fail on it, not call it identical."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * float("inf") * 0.0


def nans() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return Overflows().eval(), (torch.randn(1, 4),)
