"""``fedml.model.create(args, output_dim)``: shieldwall's model of ``model_args.model``.

The model is built exactly as ``shieldwall run`` builds it (same registry entry, same seeded
initialisation), so the drop-in and the CLI start from the same weights; FedML's ``lr`` is its
sigmoid logistic regression when the config is FedML's (``common_args.fedml_semantics``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shieldwall.config.loader import ConfigError
from shieldwall.registry import UnknownNameError
from shieldwall.seeding import derive_seed

__all__ = ["create"]


def create(args: Any, output_dim: int) -> nn.Module:
    """The model named by ``args.model`` with ``output_dim`` outputs."""
    from shieldwall.data import load_dataset
    from shieldwall.models import MODELS
    from shieldwall.train import fedml_model_name

    cfg = args.config()
    try:
        entry = MODELS.entry(fedml_model_name(cfg))
    except UnknownNameError as exc:
        raise ConfigError(f"model_args.model: {exc}") from None
    shape = getattr(args, "_shieldwall_input_shape", None)
    if shape is None:
        shape = load_dataset(cfg.data_args.dataset, cfg.data_args.data_cache_dir).input_shape
    torch.manual_seed(derive_seed(cfg.common_args.random_seed, "init"))
    return entry.obj(tuple(shape), int(output_dim))
