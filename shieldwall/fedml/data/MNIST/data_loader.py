"""FedML's MNIST helpers, used by its "custom data and model" example without imports shown.

FedML's ``load_partition_data_mnist`` reads LEAF's federated MNIST (JSON, 1000 users) and
``download_mnist`` fetches it. Nothing is downloaded here: :func:`download_mnist` checks that the
MNIST files are under ``data_cache_dir`` (IDX files, as in ``../shared/datasets/mnist``), and
:func:`load_partition_data_mnist` splits the real MNIST into 1000 users with a Dirichlet
(α = 0.5, seed 0) label split — LEAF's users hold a power-law number of samples of two digits
each; this split is similarly skewed but not the same users. Images are flattened to 784 values
(FedML's LEAF loader gives flat rows), normalised as ``shieldwall run`` normalises them; batches
are ``DataLoader``s.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from shieldwall.data import DataNotFoundError, load_dataset
from shieldwall.data.partition import partition_indices
from shieldwall.fedml.data import dataset_list

__all__ = ["download_mnist", "load_partition_data_mnist", "LEAF_USERS"]

LEAF_USERS = 1000
"""Users in LEAF's federated MNIST (FedML's ``client_num`` for ``mnist``)."""


def _roots(path: str | os.PathLike[str]) -> list[str]:
    text = os.path.expanduser(str(path))
    # FedML's example joins data_cache_dir + "MNIST/train" without a separator
    bare = re.sub(r"MNIST([/\\](train|test))?[/\\]?$", "", text) or "."
    p = Path(text)
    return [str(q) for q in (p, *p.parents[:3], Path(bare))]


def _load(path: str | os.PathLike[str]) -> Any:
    for root in _roots(path):
        try:
            return load_dataset("mnist", root)
        except DataNotFoundError:
            continue
    raise DataNotFoundError(
        f"no MNIST files under {str(path)!r} or its parents (nothing is downloaded; point "
        "data_args.data_cache_dir at the folder holding train-images-idx3-ubyte.gz etc.)")


def download_mnist(data_cache_dir: str) -> None:
    """FedML downloads LEAF's MNIST here; shieldwall only checks the files are present."""
    _load(data_cache_dir)


def load_partition_data_mnist(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """``(client_num, train_data_num, test_data_num, train_data_global, test_data_global,
    train_data_local_num_dict, train_data_local_dict, test_data_local_dict, class_num)``.

    Accepts FedML's old signature ``(batch_size, train_path, test_path)`` and its current one
    ``(args, batch_size, train_path, test_path)``.
    """
    if args and not isinstance(args[0], int):
        args = args[1:]
    names = ("batch_size", "train_path", "test_path")
    given = dict(zip(names, args, strict=False)) | kwargs
    batch_size = int(given.get("batch_size", 10))
    data = _load(given.get("train_path", os.path.join(os.getcwd(), "MNIST", "train")))
    data.train_x = data.train_x.flatten(1)
    data.test_x = data.test_x.flatten(1)
    parts = partition_indices(data.train_y, LEAF_USERS, "hetero", alpha=0.5, seed=0, min_size=10)
    ds = dataset_list(data, parts, batch_size)
    return (LEAF_USERS, *ds)
