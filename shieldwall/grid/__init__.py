"""Running a grid of independent runs (the matrix's cells) on an executor: local processes,
a Ray cluster or a Dask cluster. See :mod:`shieldwall.grid.executors` for the contract and
:mod:`shieldwall.grid.runner` for retries, progress and results shipping."""

from shieldwall.grid.executors import (
    EXECUTORS,
    DaskExecutor,
    Executor,
    LocalProcessExecutor,
    RayExecutor,
    Resources,
    WorkerDied,
    build_executor,
)
from shieldwall.grid.runner import GridOutcome, run_cells

__all__ = [
    "EXECUTORS",
    "DaskExecutor",
    "Executor",
    "GridOutcome",
    "LocalProcessExecutor",
    "RayExecutor",
    "Resources",
    "WorkerDied",
    "build_executor",
    "run_cells",
]
