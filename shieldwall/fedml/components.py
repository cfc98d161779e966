"""A FedML data set list and any ``nn.Module`` → shieldwall's run components.

FedML hands its trainers ``[train_data_num, test_data_num, train_data_global, test_data_global,
train_data_local_num_dict, train_data_local_dict, test_data_local_dict, class_num]``. shieldwall
reads each client's training data out of its loader once (a ``DataLoader`` of any dataset,
a list of ``(x, y)`` batches as FedML's LEAF loaders give, or a list of either per silo trainer as
``split_data_for_dist_trainers`` makes), keeps it as tensors, and trains the model as given:
mini-batches of ``train_args.batch_size`` drawn from the seed, cross-entropy on the model's
outputs (FedML's ``ModelTrainerCLS`` loss), the configured attack and defense. The global test
loader is the server's test set. Every check names what is wrong in one line.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import ExperimentConfig

__all__ = ["LIST_FIELDS", "tensors_of", "components_from_fedml"]

log = logging.getLogger("shieldwall.fedml")

LIST_FIELDS = (
    "train_data_num", "test_data_num", "train_data_global", "test_data_global",
    "train_data_local_num_dict", "train_data_local_dict", "test_data_local_dict", "class_num",
)


def _fast(loader: DataLoader) -> tuple[Tensor, Tensor] | None:
    ds, indices = loader.dataset, None
    if isinstance(ds, Subset):
        ds, indices = ds.dataset, torch.as_tensor(list(ds.indices), dtype=torch.long)
    if not (isinstance(ds, TensorDataset) and len(ds.tensors) == 2):
        return None
    x, y = ds.tensors
    order = torch.as_tensor(list(iter(loader.sampler)), dtype=torch.long)
    if indices is not None:
        order = indices[order]
    return x[order], y[order]


def tensors_of(data: Any, what: str) -> tuple[Tensor, Tensor]:
    """All ``(x, y)`` of ``data`` (a loader, a list of batches, or a list of loaders)."""
    if isinstance(data, DataLoader):
        fast = _fast(data)
        if fast is not None:
            return fast
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    items: Iterable[Any] = data
    if not isinstance(data, Iterable) or isinstance(data, (str, bytes, Mapping, Tensor)):
        raise ConfigError(f"{what} must be a DataLoader or a list of (x, y) batches, "
                          f"got {type(data).__name__}")
    for item in items:
        if isinstance(item, (DataLoader, list)) and not _is_batch(item):
            x, y = tensors_of(item, what)
        elif _is_batch(item):
            x, y = torch.as_tensor(item[0]), torch.as_tensor(item[1])
        else:
            raise ConfigError(f"{what} must yield (x, y) batches, got an item of type "
                              f"{type(item).__name__}")
        xs.append(x)
        ys.append(y.reshape(-1))
    if not xs:
        raise ConfigError(f"{what} holds no samples")
    return torch.cat(xs), torch.cat(ys)


def _is_batch(item: Any) -> bool:
    return (isinstance(item, (tuple, list)) and len(item) == 2
            and all(isinstance(v, Tensor) or hasattr(v, "__array__") for v in item))


def check_list(dataset: Any) -> None:
    """FedML's 8-item list, or one line saying what is wrong."""
    if not isinstance(dataset, (list, tuple)) or len(dataset) != len(LIST_FIELDS):
        got = (f"{len(dataset)} items" if isinstance(dataset, (list, tuple))
               else f"a {type(dataset).__name__}")
        raise ConfigError(
            f"the dataset must be FedML's list of {len(LIST_FIELDS)} items "
            f"[{', '.join(LIST_FIELDS)}], got {got}")
    for i in (4, 5, 6):
        if not isinstance(dataset[i], Mapping):
            raise ConfigError(f"dataset[{i}] ({LIST_FIELDS[i]}) must be a dict of client index "
                              f"-> data, got {type(dataset[i]).__name__}")
    if isinstance(dataset[7], bool) or not isinstance(dataset[7], int) or dataset[7] < 2:
        raise ConfigError(f"dataset[7] (class_num) must be an integer >= 2, got {dataset[7]!r}")
    keys = sorted(dataset[5])
    if keys != list(range(len(keys))) or not keys:
        raise ConfigError("dataset[5] (train_data_local_dict) must have the client indices "
                          f"0..N-1 as keys, got {keys[:5]}{'…' if len(keys) > 5 else ''}")


def check_model(model: Any, x: Tensor, y: Tensor, class_num: int) -> None:
    """The model's output must be ``(batch, class_num)`` logits/scores for labels < class_num."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or y.numel() == 0:
        raise ConfigError(f"labels must be integer class indices, got dtype {y.dtype}")
    if int(y.min()) < 0 or int(y.max()) >= class_num:
        raise ConfigError(f"labels range over [{int(y.min())}, {int(y.max())}] but class_num is "
                          f"{class_num}")
    try:
        with torch.no_grad():
            out = model(x[:2])
    except Exception as exc:  # noqa: BLE001 (one line naming the mismatch)
        raise ConfigError(f"the model cannot take the data's inputs of shape "
                          f"{tuple(x[:2].shape)}: {type(exc).__name__}: {exc}") from None
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] != class_num:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError(f"the model's output {shape} does not match the labels: expected "
                          f"(batch, {class_num}) scores for {class_num} classes (class_num)")


def components_from_fedml(cfg: ExperimentConfig, dataset: Any, model: nn.Module,
                          device: torch.device, *, with_shards: bool = True,
                          ) -> tuple[ExperimentConfig, Any]:
    """``(cfg, Components)`` training ``model`` on ``dataset`` with ``cfg``'s attack and defense.

    ``train_args.client_num_in_total`` becomes the number of clients in the list (logged when it
    differs); ``client_num_per_round`` is capped at it. ``with_shards=False`` (a networked server,
    which trains no client) reads only the first client's data, to check the model against it.
    """
    from shieldwall.algorithms import ALGORITHMS
    from shieldwall.algorithms.adversary import build_adversary
    from shieldwall.algorithms.base import ClientData
    from shieldwall.algorithms.defense import build_defense, defense_f
    from shieldwall.data import Dataset
    from shieldwall.registry import UnknownNameError
    from shieldwall.train import Components

    check_list(dataset)
    class_num = int(dataset[7])
    local = dataset[5]
    shards: dict[int, ClientData] = {}
    for c in range(len(local) if with_shards else 1):
        x, y = tensors_of(local[c], f"dataset[5][{c}] (train_data_local_dict)")
        shards[c] = ClientData(c, x.to(device), y.long().to(device))
    test_x, test_y = tensors_of(dataset[3], "dataset[3] (test_data_global)")
    first = shards[0]
    check_model(model, first.x, first.y, class_num)
    check_model(model, test_x, test_y.long(), class_num)
    t = cfg.train_args
    n = len(local)
    if n != t.client_num_in_total:
        log.info("train_args.client_num_in_total = %d: the dataset list has %d clients",
                 t.client_num_in_total, n)
    per_round = min(t.client_num_per_round or n, n)
    t = dataclasses.replace(t, client_num_in_total=n, client_num_per_round=per_round)
    cfg = dataclasses.replace(cfg, train_args=t)
    if cfg.attack_args.byzantine_client_num > n:
        raise ConfigError(f"attack_args.byzantine_client_num "
                          f"({cfg.attack_args.byzantine_client_num}) exceeds the {n} clients "
                          "of the dataset list")
    data = Dataset(str(cfg.data_args.dataset), first.x[:0].cpu(), first.y[:0].cpu(),
                   test_x.float(), test_y.long(), class_num)
    try:
        algorithm = ALGORITHMS.get(t.federated_optimizer)(t, model, device)
    except UnknownNameError as exc:
        raise ConfigError(f"train_args.federated_optimizer: {exc}") from None
    defense = build_defense(cfg)
    adversary = build_adversary(cfg, class_num)
    f = defense_f(cfg)
    if cfg.defense_args.enable_defense:
        defense.check_tolerates(per_round, f)
    parts = Components(cfg, device, data, shards if with_shards else {}, algorithm, defense,
                       adversary, f, algorithm.flat.vector())
    return cfg, parts
