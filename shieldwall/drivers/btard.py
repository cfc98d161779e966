"""BTARD-SGD's driver (serverless, verified aggregation): :func:`shieldwall.btard.run.run_btard`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shieldwall.config import ExperimentConfig
from shieldwall.drivers import DRIVERS

__all__ = ["btard", "is_btard"]


def is_btard(cfg: ExperimentConfig) -> bool:
    return str(cfg.train_args.federated_optimizer).upper() == "BTARD"


@DRIVERS.register("btard", claims=is_btard, claim="train_args.federated_optimizer: BTARD")
def btard(cfg: ExperimentConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """BTARD-SGD (Gorbunov et al., 2022): peers average with butterfly CenteredClip, commit to
    their parts, check each other along shared random directions and ban proven attackers; no
    server. Claims every config with ``train_args.federated_optimizer: BTARD``."""
    from shieldwall.btard.run import run_btard  # imported on use: peers, crypto, transports

    return run_btard(cfg, resume=resume)
