"""Small real PyTorch models for the tiling tests (built through `python:` specs by coinfer's capture).

`vgg16_features` is torchvision's VGG16 convolutional part alone (torchvision's own `make_layers`
of configuration "D", initialised as torchvision's VGG does): the classifier holds 90% of the 138 M
weights, is never tiled, and building it at random takes seconds the fast tests do not have.

`dilated_residual` is the held-back model of issue 15: depthwise, grouped, dilated, strided and
even-kernel 'same' convolutions inside a residual block with a pooled, strided shortcut, two
branches joined along channels, a ceil-mode max pool, and a global head that a tiled range must
stop before. Its batch norms get random statistics, so they are not the identity.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import vgg


class VggFeatures(nn.Module):
    """VGG16's `features` under the same attribute, so its node ids are torchvision's (features.0 ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg.make_layers(vgg.cfgs["D"], batch_norm=False)
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def vgg16_features() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return VggFeatures().eval(), (torch.randn(1, 3, 96, 96),)


class DilatedResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.depthwise = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU6(inplace=True)
        self.grouped = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(16)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(8, 16, 1))
        self.act2 = nn.SiLU()
        self.same = nn.Conv2d(16, 8, 4, padding="same")  # even kernel: one more row of padding below
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.mix = nn.Conv2d(24, 16, 3, padding=2, dilation=2)
        self.down = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.act1(self.bn1(self.depthwise(x)))
        y = self.bn2(self.grouped(y))
        x = self.act2(y + self.shortcut(x))
        x = torch.cat([self.same(x), self.pool(x)], dim=1)
        x = self.down(torch.sigmoid(self.mix(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def dilated_residual() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    model = DilatedResidual()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    # 44 x 38: the ceil-mode pool adds a last, partial window down the 22 rows it sees, not across 19 columns
    return model.eval(), (torch.randn(1, 3, 44, 38),)
