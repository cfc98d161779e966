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
    fedml_model_name,
    select_runtime,
)
from shieldwall.rundir import (
    Resume,
    Stateful,
    held_run_dirs,
    is_test_round,
    make_run_dir,
    open_run,
    release_run_dir,
    run_rounds,
)
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
    "fedml_model_name",
    "is_test_round",
]


def train(
    cfg: ExperimentConfig, *, resume: str | Path | None = None, force: bool = False,
    components: Components | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` to its last round; returns the summary (also written to ``summary.json``).

    ``resume`` continues that run directory; ``force`` lets ``cfg`` change what fixes the
    experiment (seed, data, model…; see :mod:`shieldwall.rundir.changes`) mid-run.
    ``components``: already built (FedML's API with a user's own data set and model); only the
    server round loop takes them.
    """
    driver = select_driver(cfg)
    extra: dict[str, Any] = {}
    if components is not None:
        if driver.name != "rounds":
            raise ValueError(f"a user's own data set and model run with the server round loop "
                             f"only, not with the {driver.name!r} driver")
        extra["components"] = components
    if resume is not None and not isinstance(resume, Resume):
        resume = Resume(Path(resume), force=force)
    held = held_run_dirs()
    try:
        return driver.obj(cfg, resume=resume, **extra)
    finally:
        for run_dir in held_run_dirs() - held:  # the run directory this run locked
            release_run_dir(run_dir)
