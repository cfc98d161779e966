"""SVHN (Street View House Numbers, cropped digits) from the MATLAB files, local files only.

Expected (see :mod:`shieldwall.data.files` for how the folder is found): ``train_32x32.mat`` and
``test_32x32.mat`` (``extra_32x32.mat`` is not used). Each holds ``X`` shaped (32, 32, 3, N) uint8
and ``y`` shaped (N, 1) with labels 1–10, where 10 stands for the digit 0 and is mapped to 0.
Images come back as float32 ``(N, 3, 32, 32)`` normalised per channel with the usual constants,
mean (0.4377, 0.4438, 0.4728) and std (0.1980, 0.2010, 0.1970).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from shieldwall.data import DATASETS, Dataset
from shieldwall.data.files import locate, missing_file_error
from shieldwall.data.pixels import normalize_uint8

__all__ = ["load_svhn", "read_svhn_mat", "SVHN_MEAN", "SVHN_STD"]

SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
SVHN_FOLDERS = ("svhn", "SVHN", "svhn_cropped")
_FILES = ("train_32x32.mat", "test_32x32.mat")


def read_svhn_mat(path: str | Path) -> tuple[Tensor, Tensor]:
    """One SVHN ``.mat`` file: normalised float32 images ``(N, 3, 32, 32)`` and int64 labels 0–9."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except (ValueError, TypeError, OSError) as exc:
        raise ValueError(f"{path}: not a readable MATLAB file ({exc})") from exc
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: SVHN file lacks the variables 'X' and 'y'")
    x = np.asarray(mat["X"])
    if x.ndim != 4 or x.shape[2] != 3:
        raise ValueError(f"{path}: expected X shaped (H, W, 3, N), got {x.shape}")
    y = np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    if len(y) != x.shape[3]:
        raise ValueError(f"{path}: {x.shape[3]} images but {len(y)} labels")
    if y.size and (y.min() < 0 or y.max() > 10):
        raise ValueError(f"{path}: labels outside 0–10")
    y[y == 10] = 0
    if x.dtype != np.uint8:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"{path}: pixel values outside 0–255 ({x.dtype})")
        x = x.astype(np.uint8)
    x = np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    return normalize_uint8(x, SVHN_MEAN, SVHN_STD), torch.from_numpy(y)


@DATASETS.register("svhn", folders=SVHN_FOLDERS, mean=SVHN_MEAN, std=SVHN_STD)
def load_svhn(root: str | None = None) -> Dataset:
    """SVHN cropped digits (73,257 + 26,032 colour images, 3×32×32, 10 classes)."""
    folder = locate("svhn", root, SVHN_FOLDERS, lambda f: (f / _FILES[0]).is_file(), list(_FILES))
    splits = []
    for name in _FILES:
        path = folder / name
        if not path.is_file():
            raise missing_file_error("svhn", folder, [name])
        splits.append(read_svhn_mat(path))
    (train_x, train_y), (test_x, test_y) = splits
    return Dataset("svhn", train_x, train_y, test_x, test_y, 10)
