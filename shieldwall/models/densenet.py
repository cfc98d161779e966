"""DenseNet-BC for small images (Huang et al. 2017; layout as in kuangliu/pytorch-cifar).

Bottleneck layers (BN → ReLU → 1×1 conv to ``4k`` → BN → ReLU → 3×3 conv to ``k``) whose outputs
are concatenated to their inputs; between dense blocks a transition (BN → ReLU → 1×1 conv
compressing by ``reduction`` → 2×2 average pool); a 3×3 stem of ``2k`` channels; BN → ReLU →
global average pool → linear at the end.

Registered:

* ``densenet`` (``densenet_bc``, ``densenet40``, ``densenet_bc_40``): DenseNet-BC with depth 40 and
  growth rate k = 12 — three dense blocks of 6 bottleneck layers, compression 0.5; about 0.18 M
  parameters, cheap enough for federated runs on CPU.
* ``densenet121``: kuangliu's CIFAR DenseNet-121 — blocks of 6, 12, 24, 16 layers, k = 32;
  about 7 M parameters.

A transition's pooling is skipped when the map is already 1×1, so 28×28 and 8×8 inputs work; the
stem takes ``input_shape[0]`` channels. Normalisation is batch-norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from shieldwall.models import MODELS
from shieldwall.models.resnet import NormLayer
from shieldwall.models.utils import image_shape, pool_or_identity

__all__ = ["DenseNet", "DenseLayer", "Transition"]


class DenseLayer(nn.Module):
    """Bottleneck layer: ``k`` new feature maps concatenated to the input."""

    def __init__(self, in_planes: int, growth_rate: int, norm_layer: NormLayer) -> None:
        super().__init__()
        inner = 4 * growth_rate
        self.bn1 = norm_layer(in_planes)
        self.conv1 = nn.Conv2d(in_planes, inner, 1, bias=False)
        self.bn2 = norm_layer(inner)
        self.conv2 = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return torch.cat([out, x], dim=1)


class Transition(nn.Module):
    """BN → ReLU → 1×1 convolution → 2×2 average pooling (or identity on a 1×1 map)."""

    def __init__(self, in_planes: int, out_planes: int, pool: nn.Module, norm_layer: NormLayer):
        super().__init__()
        self.bn = norm_layer(in_planes)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNet(nn.Module):
    """DenseNet-BC.

    Args:
        input_shape: ``(channels, height, width)`` of one input.
        num_classes: number of outputs.
        block_config: bottleneck layers per dense block.
        growth_rate: ``k``, feature maps added by each layer.
        reduction: transition compression (0.5 for "-BC").
        norm_layer: normalisation factory, batch-norm by default.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        block_config: Sequence[int] = (6, 6, 6),
        growth_rate: int = 12,
        reduction: float = 0.5,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape(input_shape, "densenet")
        planes = 2 * growth_rate
        size = min(height, width)
        layers: list[nn.Module] = [nn.Conv2d(channels, planes, 3, padding=1, bias=False)]
        for i, depth in enumerate(block_config):
            for _ in range(depth):
                layers.append(DenseLayer(planes, growth_rate, norm_layer))
                planes += growth_rate
            if i < len(block_config) - 1:
                out = int(math.floor(planes * reduction))
                pool, size = pool_or_identity(size, avg=True)
                layers.append(Transition(planes, out, pool, norm_layer))
                planes = out
        layers += [norm_layer(planes), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@MODELS.register("densenet", aliases=("densenet_bc", "densenet40", "densenet_bc_40"))
def densenet_bc40(input_shape: Sequence[int], num_classes: int) -> DenseNet:
    """DenseNet-BC, depth 40, growth rate 12 (three blocks of 6 bottleneck layers)."""
    return DenseNet(input_shape, num_classes, (6, 6, 6), growth_rate=12)


@MODELS.register("densenet121", aliases=("DenseNet121", "densenet_121"))
def densenet121(input_shape: Sequence[int], num_classes: int) -> DenseNet:
    """kuangliu's CIFAR DenseNet-121: blocks of 6, 12, 24, 16 layers, growth rate 32."""
    return DenseNet(input_shape, num_classes, (6, 12, 24, 16), growth_rate=32)
