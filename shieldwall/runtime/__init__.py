"""Runtimes: where clients run (simulator, torch.distributed, networked); see :mod:`.base`."""

import shieldwall.algorithms  # noqa: F401  first: algorithms.server imports runtime.base
from shieldwall.runtime.base import (
    RUNTIMES,
    ClientExecutor,
    RoundPlan,
    RoundResults,
    Runtime,
    sanitize_row,
)
from shieldwall.runtime.simulator import SimulatorRuntime
from shieldwall.runtime.torch_dist import TorchDistributedRuntime, WorkerLostError

__all__ = [
    "RUNTIMES",
    "ClientExecutor",
    "RoundPlan",
    "RoundResults",
    "Runtime",
    "SimulatorRuntime",
    "TorchDistributedRuntime",
    "WorkerLostError",
    "sanitize_row",
]
