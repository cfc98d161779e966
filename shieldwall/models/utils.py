"""Small model helpers: batch-norm detection, parameter counts, input-shape checks and sizing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shieldwall.models.pooling import MaxPool2d

__all__ = ["has_batchnorm", "num_parameters", "image_shape", "output_shape", "pool_or_identity"]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` holds a batch-norm layer (any ``BatchNorm1d/2d/3d``, lazy or synced).

    Such models keep running statistics in buffers, which federated averaging and robust
    aggregation of parameter vectors do not cover; callers may want to warn or refuse.
    """
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def num_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (buffers such as batch-norm statistics not included)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """``input_shape`` as ``(channels, height, width)``; ValueError for anything else."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(
            f"model {model!r} needs image inputs shaped (channels, height, width), got "
            f"{tuple(input_shape)}; use 'lr' or 'mlp' for flat features"
        )
    return shape  # type: ignore[return-value]


@torch.no_grad()
def output_shape(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape (without batch) of ``module``'s output for one zero input, computed in eval mode."""
    was_training = module.training
    module.eval()
    try:
        out = module(torch.zeros(1, *input_shape))
    finally:
        module.train(was_training)
    return tuple(out.shape[1:])


def pool_or_identity(size: int, kernel: int = 2, avg: bool = False) -> tuple[nn.Module, int]:
    """A stride-``kernel`` pooling layer and the spatial size after it.

    When ``size < kernel`` the layer is an identity instead, so that deep CIFAR networks (five
    poolings for 32×32) still work on 28×28 or 8×8 inputs rather than collapsing to zero size.
    """
    if size < kernel:
        return nn.Identity(), size
    layer = nn.AvgPool2d(kernel) if avg else MaxPool2d(kernel)
    return layer, size // kernel
