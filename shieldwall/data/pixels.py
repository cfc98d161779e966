"""Pixel normalisation shared by the image readers: uint8 → standardised float32, fast."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["normalize_uint8"]


def normalize_uint8(
    arr: np.ndarray, mean: float | Sequence[float], std: float | Sequence[float]
) -> Tensor:
    """``(arr / 255 - mean) / std`` as a new float32 tensor.

    Args:
        arr: uint8 pixels; with per-channel constants, shaped ``(N, C, ...)``.
        mean, std: one constant for every pixel, or one per channel (axis 1).

    Uses a 256-entry look-up table per channel, which is several times faster than converting
    and then normalising in place (MNIST's 47 M pixels take about 0.1 s).
    """
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    means = [float(mean)] if np.isscalar(mean) else [float(m) for m in mean]  # type: ignore[arg-type]
    stds = [float(std)] if np.isscalar(std) else [float(s) for s in std]  # type: ignore[arg-type]
    if len(means) != len(stds):
        raise ValueError(f"{len(means)} means but {len(stds)} standard deviations")
    levels = torch.arange(256, dtype=torch.float32)
    luts = [levels.div(255.0).sub_(m).div_(s).numpy() for m, s in zip(means, stds)]
    if len(luts) == 1:
        return torch.from_numpy(luts[0][arr])
    if arr.ndim < 2 or arr.shape[1] != len(luts):
        raise ValueError(f"{len(luts)} per-channel constants for pixels shaped {arr.shape}")
    out = np.empty(arr.shape, dtype=np.float32)
    for c, lut in enumerate(luts):
        out[:, c] = lut[arr[:, c]]
    return torch.from_numpy(out)
