"""DETOX/ByzShield training with per-file votes (:mod:`shieldwall.redundancy.training`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shieldwall.config import ExperimentConfig
from shieldwall.drivers import DRIVERS

__all__ = ["redundancy", "is_redundant"]


def is_redundant(cfg: ExperimentConfig) -> bool:
    return bool(cfg.redundancy_args.enable)


@DRIVERS.register("redundancy", claims=is_redundant, claim="redundancy_args.enable: true")
def redundancy(cfg: ExperimentConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """PS-SGD with redundant files (DETOX, ByzShield): each file's gradient is computed by
    ``r`` workers, the server takes a majority vote per file, then aggregates the votes with
    ``redundancy_args.mode``. Claims every config with ``redundancy_args.enable: true``."""
    from shieldwall.redundancy.training import run_redundant

    return run_redundant(cfg, resume=resume)
