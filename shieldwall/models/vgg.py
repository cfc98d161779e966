"""VGG with batch-norm for small images, as in kuangliu/pytorch-cifar.

Configurations A, B, D and E of Simonyan & Zisserman 2015 (``vgg11``, ``vgg13``, ``vgg16``,
``vgg19``): stacks of 3×3 convolution → BatchNorm → ReLU with 2×2 max-pooling between them, then
global average pooling and a single linear layer on the 512 features (the CIFAR variant; no
4096-wide fully connected layers). VGG-11 has 9,231,114 parameters for 3×32×32 and 10 classes.

The five poolings assume 32×32 inputs; for smaller ones a pooling that would shrink the map below
1×1 is skipped (28×28: 14, 7, 3, 1, 1), so 1×28×28 and 1×8×8 work. The first convolution takes
``input_shape[0]`` channels.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from shieldwall.models import MODELS
from shieldwall.models.resnet import NormLayer
from shieldwall.models.utils import image_shape, pool_or_identity

__all__ = ["VGG", "VGG_CONFIGS"]

#: Channels per 3×3 convolution; ``"M"`` is a 2×2 max-pool.
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, "M"),
        *(512, 512, 512, "M", 512, 512, 512, "M"),
    ),
    "vgg19": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}


class VGG(nn.Module):
    """A VGG configuration (see :data:`VGG_CONFIGS`) with batch-norm and one linear classifier."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        config: str | Sequence[int | str] = "vgg11",
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape(input_shape, "vgg")
        cfg = VGG_CONFIGS[config] if isinstance(config, str) else tuple(config)
        layers: list[nn.Module] = []
        size = min(height, width)
        for item in cfg:
            if item == "M":
                pool, size = pool_or_identity(size)
                layers.append(pool)
            else:
                out = int(item)
                layers += [nn.Conv2d(channels, out, 3, padding=1), norm_layer(out), nn.ReLU()]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _register(name: str) -> None:
    def build(input_shape: Sequence[int], num_classes: int) -> VGG:
        return VGG(input_shape, num_classes, name)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{name.upper()} with batch-norm (CIFAR variant)."
    MODELS.add(name, build, aliases=(name.upper(), f"{name}_bn", name.replace("vgg", "vgg_")))


for _name in VGG_CONFIGS:
    _register(_name)
