"""The in-process simulator: every client runs in this process, one after another.

Rows go through :func:`sanitize_row` exactly as received rows do in the multi-process runtimes,
so a run behaves the same wherever it runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.config.schema import ExperimentConfig
from shieldwall.runtime.base import (
    RUNTIMES,
    ClientExecutor,
    RoundPlan,
    RoundResults,
    Runtime,
    sanitize_row,
)

__all__ = ["SimulatorRuntime"]


@RUNTIMES.register("simulator", aliases=("sim", "simulation", "local"))
class SimulatorRuntime(Runtime):
    """Runs the round's clients sequentially through one :class:`ClientExecutor`.

    Args:
        executor: hosts every client.
        max_update_norm: rows with a larger norm are rejected.
    """

    def __init__(self, executor: ClientExecutor, *, max_update_norm: float = 1e12) -> None:
        self.executor = executor
        self.max_update_norm = max_update_norm

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, executor: ClientExecutor) -> SimulatorRuntime:
        return cls(executor, max_update_norm=cfg.comm_args.max_update_norm)

    def run_clients(self, params: Tensor, plan: RoundPlan) -> RoundResults:
        n, d = len(plan.client_ids), self.executor.dim
        updates = torch.empty((n, d), dtype=params.dtype, device=params.device)
        num_samples = torch.zeros(n, dtype=torch.float64)
        losses = torch.full((n,), float("nan"), dtype=torch.float64)
        rejected: dict[int, str] = {}
        for i, client_id in enumerate(plan.client_ids):
            result = self.executor.run(params, plan, client_id)
            row, reason = sanitize_row(result.update, d, params.dtype, self.max_update_norm)
            if row is None:
                updates[i] = float("nan")
                rejected[client_id] = str(reason)
                continue
            updates[i] = row
            num_samples[i] = result.num_samples
            losses[i] = result.loss
        return RoundResults(updates, num_samples, losses, rejected)
