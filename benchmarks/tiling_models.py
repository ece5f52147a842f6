"""The first 16 layers of YOLOv2's Darknet-19 backbone, as `python:tiling_models:darknet16` builds it.

DeepThings (Zhao et al., TCAD 2018) tiles exactly this part of YOLOv2: layers 1..16 of Darknet-19
in Table 6 of YOLO9000 (Redmon & Farhadi, CVPR 2017), which are 3x3 and 1x1 convolutions (each
without bias, then batch norm and a leaky ReLU of slope 0.1, as Darknet's layers are) and 2x2
max pools of stride 2:

    conv 32 3x3, max, conv 64 3x3, max, conv 128 3x3, conv 64 1x1, conv 128 3x3, max,
    conv 256 3x3, conv 128 1x1, conv 256 3x3, max, conv 512 3x3, conv 256 1x1, conv 512 3x3,
    conv 256 1x1

At YOLOv2's 416 x 416 input it maps 3 x 416 x 416 to 256 x 26 x 26. Layer k is `layers.{k-1}`, so
the first L layers end at the last node whose module starts with `layers.{L-1}`. Batch norms get
random running statistics so that they are not the identity. Written from the table for coinfer's
tiling benchmark; `benchmarks/tiling.py` puts this directory on sys.path for the python: spec.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SIZE = 416
# (output channels, kernel) of a convolution, or None for a 2x2 max pool of stride 2: Table 6, rows 1..16
DARKNET19_FIRST_16: tuple[tuple[int, int] | None, ...] = (
    (32, 3), None, (64, 3), None, (128, 3), (64, 1), (128, 3), None,
    (256, 3), (128, 1), (256, 3), None, (512, 3), (256, 1), (512, 3), (256, 1),
)
LEAKY_SLOPE = 0.1  # Darknet's leaky activation


def conv_bn_leaky(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    """A Darknet convolutional layer: 'same' padding for odd kernels, no bias (batch norm has one)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


class Darknet16(nn.Module):
    """Darknet-19's first 16 layers (module docstring); `layers[k]` is Table 6's row k + 1."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for spec in DARKNET19_FIRST_16:
            if spec is None:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out_channels, kernel = spec
                layers.append(conv_bn_leaky(channels, out_channels, kernel))
                channels = out_channels
        self.layers = nn.Sequential(*layers)
        for module in self.modules():
            statistics = (module.running_mean, module.running_var) if isinstance(module, nn.BatchNorm2d) else None
            if statistics is not None and statistics[0] is not None and statistics[1] is not None:
                statistics[0].uniform_(-0.1, 0.1)
                statistics[1].uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out


def darknet16() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """(the model in eval mode, an example 1 x 3 x 416 x 416 input), as a python: spec wants."""
    return Darknet16().eval(), (torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE),)


class VggFeatures(nn.Module):
    """torchvision's VGG16 convolutional part alone, under its attribute name (node ids features.0 ..)."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import vgg

        self.features = vgg.make_layers(vgg.cfgs["D"], batch_norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.features(x)
        return out


def vgg16_features() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """VGG16's features at 224 x 224 without the 120 M weights of its classifier (measured runs ship less)."""
    return VggFeatures().eval(), (torch.randn(1, 3, 224, 224),)
