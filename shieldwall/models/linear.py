"""Logistic regression and a small multilayer perceptron."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from shieldwall.models import MODELS

__all__ = ["LogisticRegression", "FedMLLogisticRegression", "MLP"]


@MODELS.register("lr", aliases=("logistic_regression", "logreg"))
class LogisticRegression(nn.Module):
    """Softmax regression: one linear layer on the flattened input."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


@MODELS.register("fedml_lr")
class FedMLLogisticRegression(LogisticRegression):
    """FedML's ``lr`` (``fedml/model/linear/lr.py``): ``sigmoid(linear(x))``, trained and tested
    with cross-entropy on those outputs as FedML does. Used for ``model: lr`` when the config is
    FedML's (``common_args.fedml_semantics``)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.linear(x.flatten(1)))


@MODELS.register("mlp", aliases=("fc", "dnn"))
class MLP(nn.Module):
    """Two hidden ReLU layers (200 units each, as in McMahan et al. 2017's 2NN)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 200) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
