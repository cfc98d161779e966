"""The entry point: run a config with the driver that claims it.

Kept thin on purpose (torchtitan's ``train.py``): :func:`train` asks the driver registry
(:mod:`shieldwall.drivers`) which driver runs the config — the server round loop, BTARD,
redundancy training… — and runs it. Components are built by the drivers; the run directory,
round loop and checkpoints are :mod:`shieldwall.rundir`. The names below are re-exported for
callers that import them from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shieldwall.config import ExperimentConfig
from shieldwall.drivers import DRIVERS, select_driver
from shieldwall.drivers.rounds import (
    Components,
    build_components,
    build_runtime,
    select_runtime,
)
from shieldwall.rundir import Stateful, make_run_dir, open_run, run_rounds
from shieldwall.rundir import device_for as _device

__all__ = [
    "DRIVERS",
    "Components",
    "Stateful",
    "build_components",
    "build_runtime",
    "train",
    "select_runtime",
    "make_run_dir",
    "open_run",
    "run_rounds",
    "_device",
]


def train(cfg: ExperimentConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Run ``cfg`` to its last round; returns the summary (also written to ``summary.json``)."""
    driver = select_driver(cfg)
    return driver.obj(cfg, resume=resume)
