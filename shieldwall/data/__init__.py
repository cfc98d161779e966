"""Data sets and partitions.

A data set loader is ``fn(root: str | None) -> Dataset`` registered in :data:`DATASETS`; it reads
local files only (never downloads) and raises :class:`DataNotFoundError` naming the folder and
the files it looked for. :func:`load_dataset` resolves ``data_args.data_cache_dir`` the way users
expect: the folder holding the files, or a parent holding them under the data set's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from shieldwall.registry import Registry, import_submodules

__all__ = ["DATASETS", "Dataset", "DataNotFoundError", "load_dataset"]


class DataNotFoundError(FileNotFoundError):
    """The data set's files are not where the config says."""


@dataclass
class Dataset:
    """A whole data set in memory, already normalised.

    Attributes:
        name: canonical data set name.
        train_x: ``(N, C, H, W)`` float32 images (or ``(N, F)`` features).
        train_y: ``(N,)`` int64 labels in ``[0, num_classes)``.
        test_x, test_y: the held-out split, same layout.
        num_classes: number of classes.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


DATASETS: Registry = Registry("dataset")


def load_dataset(name: str, root: str | None = None) -> Dataset:
    """Load the registered data set ``name`` from ``root`` (ignored by embedded data sets)."""
    return DATASETS.get(name)(root)


import_submodules(__name__)
