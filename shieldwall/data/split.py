"""The config's data split: :func:`~shieldwall.data.partition.partition_indices` with the keys
of ``data_args``/``train_args``, its errors as one :class:`ConfigError` line naming them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from torch import Tensor

from shieldwall.config import ConfigError, ExperimentConfig
from shieldwall.data.partition import partition_indices

__all__ = ["split_clients"]


def split_clients(cfg: ExperimentConfig, labels: Tensor | np.ndarray, *,
                  byzantine: Iterable[int] = ()) -> list[Tensor]:
    """One index tensor per client of ``train_args.client_num_in_total``, split by
    ``data_args.partition_method`` (alpha, min size) with the run's seed."""
    d, t = cfg.data_args, cfg.train_args
    try:
        return partition_indices(
            labels, t.client_num_in_total, d.partition_method, alpha=d.partition_alpha,
            seed=cfg.common_args.random_seed, min_size=d.partition_min_size, byzantine=byzantine,
        )
    except ValueError as exc:
        raise ConfigError(
            f"cannot split data_args.dataset {d.dataset!r} over train_args.client_num_in_total "
            f"= {t.client_num_in_total} clients (data_args.partition_method "
            f"{d.partition_method!r}): {exc}"
        ) from None
