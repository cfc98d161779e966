"""Residual networks for small images (CIFAR-sized; 28×28 and 8×8 work too).

Two families share one :class:`ResNet` class:

* ``resnet18``, ``resnet34``, ``resnet50`` — the CIFAR variants of He et al. 2016a as in
  kuangliu/pytorch-cifar (and ByzShield): a 3×3 stride-1 stem with 64 channels and no max-pool,
  four stages of 64/128/256/512 channels (BasicBlock ×[2,2,2,2] and ×[3,4,6,3]; Bottleneck
  ×[3,4,6,3]), global average pooling, one linear layer. ResNet-18 has 11,173,962 parameters for
  3×32×32 and 10 classes.
* ``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``, ``resnet110`` — He et al.'s CIFAR ResNets
  (6n+2 layers): a 3×3 stem with 16 channels and three stages of 16/32/64 channels of n
  BasicBlocks each (n = 3, 5, 7, 9, 18). Shortcuts that change shape use a 1×1 convolution with
  batch-norm (He's option B, as FedML's code), not option A's zero padding, so counts are a little
  above the paper's (ResNet-20: 272,474 here against 0.27 M).
* ``resnet56_fedml`` — what FedML's ``resnet56`` actually builds: Bottleneck blocks ×[6,6,6] on
  16/32/64 planes (64/128/256 output channels), 56 layers too but about 0.59 M parameters.

Normalisation is batch-norm throughout (``norm_layer`` may be swapped, e.g. for
``lambda c: nn.GroupNorm(2, c)``, by building :class:`ResNet` directly). Convolutions use Kaiming
normal initialisation (fan-out, as torchvision and FedML). The stem takes ``input_shape[0]``
channels; adaptive average pooling makes the classifier independent of the input size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from shieldwall.models import MODELS
from shieldwall.models.utils import image_shape

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "NormLayer"]

NormLayer = Callable[[int], nn.Module]


def _shortcut(in_planes: int, out_planes: int, stride: int, norm_layer: NormLayer) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        norm_layer(out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (expansion 1)."""

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, norm_layer: NormLayer = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, planes, stride, norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand (×4) with a residual connection."""

    expansion = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, norm_layer: NormLayer = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = norm_layer(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, out_planes, stride, norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3×3 stem, stages of residual blocks (the first at stride 1, the others at stride 2), global
    average pooling and a linear classifier.

    Args:
        input_shape: ``(channels, height, width)`` of one input.
        num_classes: number of outputs.
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage.
        widths: planes per stage; the stem has ``widths[0]`` channels.
        norm_layer: normalisation factory (``channels → module``), batch-norm by default.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock,
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        channels, _, _ = image_shape(input_shape, "resnet")
        if len(layers) != len(widths):
            raise ValueError(f"{len(layers)} stage depths but {len(widths)} stage widths")
        self.conv1 = nn.Conv2d(channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        stages = []
        for i, (depth, planes) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(in_planes, planes, stride, norm_layer))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.layers(out))
        return self.fc(out.flatten(1))


def _register(
    name: str,
    block: type[BasicBlock] | type[Bottleneck],
    layers: tuple[int, ...],
    widths: tuple[int, ...],
    aliases: tuple[str, ...] = (),
    doc: str = "",
) -> None:
    def build(input_shape: Sequence[int], num_classes: int) -> ResNet:
        return ResNet(input_shape, num_classes, block, layers, widths)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    MODELS.add(name, build, aliases=aliases)


_WIDE = (64, 128, 256, 512)
_CIFAR = (16, 32, 64)
_register("resnet18", BasicBlock, (2, 2, 2, 2), _WIDE, ("ResNet18", "resnet_18"), "ResNet-18.")
_register("resnet34", BasicBlock, (3, 4, 6, 3), _WIDE, ("ResNet34", "resnet_34"), "ResNet-34.")
_register("resnet50", Bottleneck, (3, 4, 6, 3), _WIDE, ("ResNet50", "resnet_50"), "ResNet-50.")
for _n in (3, 5, 7, 9, 18):
    _depth = 6 * _n + 2
    _register(
        f"resnet{_depth}",
        BasicBlock,
        (_n, _n, _n),
        _CIFAR,
        (f"ResNet{_depth}", f"resnet_{_depth}"),
        f"He et al.'s CIFAR ResNet-{_depth} ({_n} BasicBlocks per stage, 16/32/64 channels).",
    )
_register(
    "resnet56_fedml",
    Bottleneck,
    (6, 6, 6),
    _CIFAR,
    ("resnet56_bottleneck",),
    "FedML's resnet56: Bottleneck ×[6,6,6] on 16/32/64 planes.",
)
