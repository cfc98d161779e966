"""Small convolutional networks without normalisation layers: FedML's CNNs and LeNet-5.

* ``cnn`` — FedML's ``CNN_OriginalFedAvg`` (McMahan et al. 2017): 5×5 conv 32 (padding 2),
  ReLU, 2×2 max-pool, 5×5 conv 64 (padding 2), ReLU, max-pool, fc 512, ReLU, fc. 1,663,370
  parameters for 1×28×28 and 10 classes, as in the paper.
* ``cnn_dropout`` — FedML's ``CNN_DropOut`` (Reddi et al. 2021): 3×3 conv 32, 3×3 conv 64, max-pool,
  dropout 0.25, fc 128, dropout 0.5, fc. 1,199,882 parameters for 1×28×28 and 10 classes.
* ``bucketing_cnn`` — the MNIST ``Net`` of Karimireddy, He & Jaggi's bucketing code
  (``codes/tasks/mnist.py`` of ``epfml/byzantine-robust-noniid-optimizer``): the layers of
  ``cnn_dropout`` but with no ReLU between the second convolution and the max-pool, and
  channel dropout (``Dropout2d(0.25)``, whole feature maps) on the pooled map. Its second dropout
  is ``Dropout2d(0.5)`` applied to the ``(N, 128)`` hidden layer, which PyTorch runs as
  element-wise dropout (a 2-D input has no feature maps; recent versions warn that this use is
  deprecated); it is written as ``Dropout(0.5)`` here, which draws the very same masks.
  1,199,882 parameters for 1×28×28 and 10 classes.
* ``lenet`` — LeNet-5 with ReLU and max-pooling: 5×5 conv 6, pool, 5×5 conv 16, pool, fc 120,
  fc 84, fc. Inputs smaller than 32×32 get padding 2 on the first convolution (the classic way of
  feeding 28×28 MNIST), and the second convolution is padded too when the map would otherwise
  vanish (8×8 digits).

The fully connected input size is computed from ``input_shape`` by a dummy forward, so any
channel count and spatial size from 8×8 up works. None of these has batch-norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from shieldwall.models import MODELS
from shieldwall.models.pooling import MaxPool2d
from shieldwall.models.utils import image_shape, output_shape

__all__ = ["CNN", "BucketingCNN", "CNNDropOut", "LeNet"]


@MODELS.register("cnn", aliases=("cnn_original_fedavg", "cnn_fedavg", "fedavg_cnn"))
class CNN(nn.Module):
    """FedML's ``CNN_OriginalFedAvg``: two 5×5 conv + max-pool stages, fc 512, fc."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels, _, _ = image_shape(input_shape, "cnn")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            MaxPool2d(2),
            nn.Flatten(),
        )
        flat = math.prod(output_shape(self.features, input_shape))
        self.classifier = nn.Sequential(
            nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@MODELS.register("cnn_dropout", aliases=("cnn_drop_out",))
class CNNDropOut(nn.Module):
    """FedML's ``CNN_DropOut``: two 3×3 convs, max-pool, dropout, fc 128, dropout, fc."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels, _, _ = image_shape(input_shape, "cnn_dropout")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=3),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.ReLU(),
            MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
        )
        flat = math.prod(output_shape(self.features, input_shape))
        self.classifier = nn.Sequential(
            nn.Linear(flat, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@MODELS.register("bucketing_cnn", aliases=("bucketing_net", "karimireddy_cnn"))
class BucketingCNN(nn.Module):
    """The bucketing paper's MNIST ``Net``: conv 32, ReLU, conv 64, max-pool (no ReLU before it),
    channel dropout 0.25, fc 128, ReLU, dropout 0.5, fc."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels, _, _ = image_shape(input_shape, "bucketing_cnn")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=3),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3),
            MaxPool2d(2),
            nn.Dropout2d(0.25),
            nn.Flatten(),
        )
        flat = math.prod(output_shape(self.features, input_shape))
        self.classifier = nn.Sequential(
            nn.Linear(flat, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@MODELS.register("lenet", aliases=("lenet5", "lenet_5"))
class LeNet(nn.Module):
    """LeNet-5 (ReLU, max-pool), padded as needed for inputs smaller than 32×32."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = image_shape(input_shape, "lenet")
        side = min(height, width)
        pad1 = 0 if side >= 32 else 2
        after1 = (side + 2 * pad1 - 4) // 2
        pad2 = 0 if after1 >= 10 else 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=pad1),
            nn.ReLU(),
            MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=pad2),
            nn.ReLU(),
            MaxPool2d(2),
            nn.Flatten(),
        )
        flat = math.prod(output_shape(self.features, input_shape))
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
