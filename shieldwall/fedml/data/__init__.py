"""``fedml.data``: FedML's data set list, built from shieldwall's data sets and partitions.

:func:`load` / :func:`load_cross_silo` return ``(dataset, class_num)`` with FedML's list
``[train_data_num, test_data_num, train_data_global, test_data_global,
train_data_local_num_dict, train_data_local_dict, test_data_local_dict, class_num]``: real
``torch.utils.data.DataLoader``s over the same partition ``shieldwall run`` trains
(``data_args.partition_method`` over ``train_args.client_num_in_total`` parts, seeded by
``common_args.random_seed``), so a script on FedML's API and ``shieldwall run`` on the same YAML
train the same clients. Each client's test loader holds an even share of the test set (FedML's
LEAF data sets ship per-user test data; ours have one test set). Nothing is downloaded.
:func:`split_data_for_dist_trainers` is FedML's helper for silos with several trainers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset

from shieldwall.data import Dataset, load_dataset
from shieldwall.data.split import split_clients

__all__ = ["load", "load_cross_silo", "split_data_for_dist_trainers", "dataset_list"]


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


def dataset_list(data: Dataset, parts: list[torch.Tensor], batch_size: int) -> list[Any]:
    """FedML's 8-item list over ``data`` split into ``parts`` (index tensors)."""
    train_local = {c: _loader(data.train_x[idx], data.train_y[idx], batch_size, True)
                   for c, idx in enumerate(parts)}
    counts = {c: int(idx.numel()) for c, idx in enumerate(parts)}
    test_parts = torch.arange(data.test_y.shape[0]).tensor_split(len(parts))
    test_local = {c: _loader(data.test_x[idx], data.test_y[idx], batch_size, False)
                  for c, idx in enumerate(test_parts)}
    return [
        int(data.train_y.shape[0]),
        int(data.test_y.shape[0]),
        _loader(data.train_x, data.train_y, batch_size, True),
        _loader(data.test_x, data.test_y, batch_size, False),
        counts,
        train_local,
        test_local,
        data.num_classes,
    ]


def load(args: Any) -> tuple[list[Any], int]:
    """FedML's ``fedml.data.load(args)``: ``(dataset, class_num)`` (module docstring)."""
    cfg = args.config()
    d, t = cfg.data_args, cfg.train_args
    from shieldwall.config.loader import ConfigError
    from shieldwall.registry import UnknownNameError

    try:
        data = load_dataset(d.dataset, d.data_cache_dir)
    except UnknownNameError as exc:
        raise ConfigError(f"data_args.dataset: {exc}") from None
    parts = split_clients(cfg, data.train_y)
    dataset = dataset_list(data, parts, t.batch_size)
    args._shieldwall_input_shape = data.input_shape
    return dataset, data.num_classes


def load_cross_silo(args: Any) -> tuple[list[Any], int]:
    """FedML's ``fedml.data.load_cross_silo(args)``: the same list as :func:`load` (each silo
    holds every part; the server tells it which to train, see docs/fedml_compat.md)."""
    return load(args)


def _split_list(items: list[Any], n: int) -> list[list[Any]]:
    items = list(items)
    while len(items) % n:
        items.append(items[-1])
    size = len(items) // n
    return [items[i * size:(i + 1) * size] for i in range(n)]


def _split_loader(loader: DataLoader, n: int) -> list[DataLoader]:
    shuffle = isinstance(loader.sampler, RandomSampler)
    return [
        DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=False,
                   sampler=DistributedSampler(loader.dataset, num_replicas=n, rank=r,
                                              shuffle=shuffle, drop_last=False))
        for r in range(n)
    ]


def split_data_for_dist_trainers(data_loaders: dict[int, Any], n_dist_trainer: int) -> dict:
    """FedML's helper: each client's loader becomes ``n_dist_trainer`` loaders, one per silo
    trainer (a ``DistributedSampler`` each; lists of batches are cut into chunks), in place."""
    for index, dl in data_loaders.items():
        if isinstance(dl, DataLoader):
            data_loaders[index] = _split_loader(dl, n_dist_trainer)
        elif isinstance(dl, list) and not (dl and isinstance(dl[0], DataLoader)):
            data_loaders[index] = _split_list(dl, n_dist_trainer)
    return data_loaders
