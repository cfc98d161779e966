"""The in-process simulator: every client runs in this process.

When the model and algorithm allow it (``device_args.batched``), a round's clients are computed
together by :class:`~shieldwall.runtime.batched.BatchedExecutor` (same rows as the loop, to
floating-point rounding); otherwise one after another. Either way, rows go through the checks of
:func:`sanitize_row` (values in one pass over the matrix, :func:`sanitize_matrix`) as received
rows do in the multi-process runtimes, so a run behaves the same wherever it runs.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from shieldwall.algorithms.base import LocalResult
from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import ExperimentConfig
from shieldwall.runtime._memory import retain_freed_memory
from shieldwall.runtime.base import (
    RUNTIMES,
    ClientExecutor,
    RoundPlan,
    RoundResults,
    Runtime,
    row_form_problem,
    sanitize_matrix,
)
from shieldwall.runtime.batched import BatchedExecutor

log = logging.getLogger(__name__)

__all__ = ["SimulatorRuntime"]


@RUNTIMES.register("simulator", aliases=("sim", "simulation", "local"))
class SimulatorRuntime(Runtime):
    """Runs the round's clients through one :class:`ClientExecutor`, batched when possible.

    Args:
        executor: hosts every client.
        max_update_norm: rows with a larger norm are rejected.
        batched: ``auto`` (batched when exact, else the loop, logged once), ``on`` (batched or
            :class:`ConfigError`), ``off`` (the loop).
        max_clients_per_chunk: clients per batched computation (``None``: from memory).
    """

    def __init__(
        self,
        executor: ClientExecutor,
        *,
        max_update_norm: float = 1e12,
        batched: str = "auto",
        max_clients_per_chunk: int | None = None,
    ) -> None:
        self.executor = executor
        self.max_update_norm = max_update_norm
        if executor.algorithm.device.type == "cpu":
            retain_freed_memory()  # each round's (n, d) matrix reuses memory (see _memory)
        self.batched: BatchedExecutor | None = None
        mode = batched.lower()
        if mode not in ("auto", "on", "off"):
            raise ConfigError(f"device_args.batched: {batched!r} is not one of auto, on, off")
        if mode != "off":
            batch = BatchedExecutor(executor, max_clients_per_chunk=max_clients_per_chunk)
            if batch.available:
                self.batched = batch
                log.info("simulator: clients of a round are computed batched")
            elif mode == "on":
                raise ConfigError(f"device_args.batched is on, but {batch.reason}")
            else:
                log.info("simulator: clients run one by one (no batching: %s)", batch.reason)

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, executor: ClientExecutor) -> SimulatorRuntime:
        return cls(
            executor,
            max_update_norm=cfg.comm_args.max_update_norm,
            batched=cfg.device_args.batched,
            max_clients_per_chunk=cfg.device_args.max_clients_per_chunk,
        )

    def _results(self, params: Tensor, plan: RoundPlan, out: Tensor) -> list[LocalResult]:
        results = self.batched.run(params, plan, out) if self.batched is not None else None
        if results is None:
            results = [self.executor.run(params, plan, c) for c in plan.client_ids]
        return results

    def run_clients(self, params: Tensor, plan: RoundPlan) -> RoundResults:
        n, d = len(plan.client_ids), self.executor.dim
        updates = torch.empty((n, d), dtype=params.dtype, device=params.device)
        num_samples = torch.zeros(n, dtype=torch.float64)
        losses = torch.full((n,), float("nan"), dtype=torch.float64)
        rejected: dict[int, str] = {}
        results = self._results(params, plan, updates)
        checked: list[int] = []  # rows in ``updates`` whose values still need checking
        for i, (client_id, result) in enumerate(zip(plan.client_ids, results, strict=True)):
            row = result.update
            in_place = isinstance(row, Tensor) and row.data_ptr() == updates[i].data_ptr()
            if not in_place:  # batched rows are written into ``updates`` already
                reason = row_form_problem(row, d, params.dtype)
                if reason is not None:
                    updates[i] = float("nan")
                    rejected[client_id] = reason
                    continue
                updates[i] = row
            checked.append(i)
            num_samples[i] = result.num_samples
            losses[i] = result.loss
        bad = sanitize_matrix(updates, torch.tensor(checked, dtype=torch.long),
                              self.max_update_norm)
        for i, reason in bad.items():  # as sanitize_row would reject them, in one pass
            updates[i] = float("nan")
            num_samples[i], losses[i] = 0.0, float("nan")
            rejected[plan.client_ids[i]] = reason
        return RoundResults(updates, num_samples, losses, rejected)
