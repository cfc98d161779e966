"""Runtimes: where clients run (simulator, torch.distributed, networked); see :mod:`.base`."""

from shieldwall.runtime.base import (
    RUNTIMES,
    ClientExecutor,
    RoundPlan,
    RoundResults,
    Runtime,
    sanitize_row,
)
from shieldwall.runtime.simulator import SimulatorRuntime

__all__ = [
    "RUNTIMES",
    "ClientExecutor",
    "RoundPlan",
    "RoundResults",
    "Runtime",
    "SimulatorRuntime",
    "sanitize_row",
]
