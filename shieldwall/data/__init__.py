"""Data sets and partitions.

A data set loader is ``fn(root: str | None) -> Dataset`` registered in :data:`DATASETS`; it reads
local files only (never downloads) and raises :class:`DataNotFoundError` naming the folder and
the files it looked for. :func:`load_dataset` resolves ``data_args.data_cache_dir`` the way users
expect: the folder holding the files, or a parent holding them under the data set's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
        train_groups: ``(N,)`` int64 group of each training sample (text: its document), used by
            the ``document`` partition; ``None``: the labels serve.
        eval_split: which split ``test_x``/``test_y`` hold (text data sets evaluate on ``valid``
            each round and keep ``test`` in ``extra``).
        extra: anything else a data set carries (text: tokenizer, other splits).

    Text data sets (masked LM) hold ``(N, L)`` int64 token ids in ``*_x`` and ``(N, L)`` targets
    in ``*_y``, ``-100`` (PyTorch's ``ignore_index``) where a token is not predicted;
    ``num_classes`` is the vocabulary size.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    train_groups: Tensor | None = None
    eval_split: str = "test"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def partition_labels(self) -> Tensor:
        """What partitions split by: ``train_groups`` when set, else ``train_y``."""
        return self.train_groups if self.train_groups is not None else self.train_y


DATASETS: Registry = Registry("dataset")


def load_dataset(name: str, root: str | None = None, options: Any = None) -> Dataset:
    """Load the registered data set ``name`` from ``root`` (ignored by embedded data sets).

    ``options`` (the config's ``text_args``) reaches loaders registered with ``options=True``.
    """
    entry = DATASETS.entry(name)
    if entry.meta.get("options"):
        return entry.obj(root, options)
    return entry.obj(root)


import_submodules(__name__)
