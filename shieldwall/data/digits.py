"""The embedded default data set: scikit-learn's bundled 8×8 handwritten digits.

1,797 grey images of the digits 0–9 shipped inside scikit-learn, so a first run needs no files
and no network. Split 80/20 with a fixed seed; pixels (0–16) are scaled to [0, 1] and
standardised with the training split's mean and standard deviation.
"""

from __future__ import annotations

import torch

from shieldwall.data import DATASETS, Dataset

__all__ = ["load_digits"]


@DATASETS.register("digits", aliases=("sklearn_digits", "default"), embedded=True)
def load_digits(root: str | None = None) -> Dataset:
    """Load the embedded digits (``root`` is ignored)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    num_test = len(y) // 5
    test_idx, train_idx = perm[:num_test], perm[num_test:]
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    return Dataset("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10)
