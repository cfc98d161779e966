"""The round loop every round-based driver shares: resume, rounds, evaluation, checkpoints.

A driver supplies ``step(params, round) -> (params, record)``; :func:`run_rounds` runs it from
the first missing round to ``train_args.comm_round``, evaluates on the test set every
``validation_args.frequency_of_the_test`` rounds (and after the last), logs each round to
``metrics.jsonl``/TensorBoard, checkpoints every ``train_args.checkpoint_frequency`` rounds
and writes ``summary.json`` and ``final_params.pt``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

from shieldwall.algorithms.base import Algorithm, evaluate
from shieldwall.checkpoint import load_checkpoint, save_checkpoint
from shieldwall.config import ExperimentConfig
from shieldwall.data import Dataset
from shieldwall.metrics import MetricsLogger
from shieldwall.rundir.directory import make_run_dir, record_config

__all__ = ["Stateful", "device_for", "open_run", "run_rounds"]

log = logging.getLogger(__name__)


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def device_for(cfg: ExperimentConfig) -> torch.device:
    """The torch device of this process (``device_args``); sets torch's thread count."""
    if cfg.device_args.num_threads:
        torch.set_num_threads(cfg.device_args.num_threads)
    if cfg.device_args.device:
        return torch.device(cfg.device_args.device)
    if cfg.device_args.using_gpu and torch.cuda.is_available():
        # One GPU per process under a launcher (torchrun's LOCAL_RANK, Open MPI's local rank).
        local = os.environ.get("LOCAL_RANK") or os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK")
        index = int(local or 0) % torch.cuda.device_count()
        return torch.device("cuda", index)
    return torch.device("cpu")


def open_run(
    cfg: ExperimentConfig,
    resume: str | Path | None,
    initial_params: torch.Tensor,
    algorithm: Algorithm,
    defense: Stateful | None = None,
) -> tuple[Path, torch.Tensor, int]:
    """The run directory, global vector and first round: fresh, or restored from a checkpoint.

    Records the resolved config in the run directory either way.
    """
    params, start = initial_params, 0
    if resume is not None:
        run_dir = Path(resume)
        state = load_checkpoint(run_dir)
        params = state["params"].to(initial_params.device)
        algorithm.load_state_dict(state["algorithm"])
        if defense is not None:
            defense.load_state_dict(state.get("defense", {}))
        start = int(state["round"]) + 1
        log.info("resuming %s at round %d", run_dir, start)
    else:
        run_dir = make_run_dir(cfg)
    record_config(run_dir, cfg)
    return run_dir, params, start


def run_rounds(
    cfg: ExperimentConfig,
    run_dir: Path,
    params: torch.Tensor,
    start: int,
    step: Callable[[torch.Tensor, int], tuple[torch.Tensor, dict[str, Any]]],
    algorithm: Algorithm,
    dataset: Dataset,
    defense: Stateful | None = None,
) -> dict[str, Any]:
    """Rounds ``start..comm_round-1`` of ``step``, with evaluation, metrics and checkpoints.

    ``step(params, round)`` returns the next global vector and the round's metrics record.
    Returns the run's summary (also written to ``summary.json``).
    """
    t = cfg.train_args
    device = params.device
    test_x, test_y = dataset.test_x.to(device), dataset.test_y.to(device)
    every = cfg.validation_args.frequency_of_the_test
    ckpt_every = t.checkpoint_frequency
    last: dict[str, Any] = {}
    started = time.perf_counter()
    with MetricsLogger(
        run_dir,
        total_rounds=t.comm_round,
        start_round=start,
        tensorboard=cfg.tracking_args.enable_tensorboard,
        progress=cfg.tracking_args.progress_bar,
    ) as metrics:
        for r in range(start, t.comm_round):
            round_start = time.perf_counter()
            params, entry = step(params, r)
            entry["round_time"] = time.perf_counter() - round_start
            if (r + 1) % every == 0 or r == t.comm_round - 1:
                algorithm.flat.load(params)
                loss, acc = evaluate(algorithm.model, test_x, test_y)
                entry.update(test_loss=loss, test_accuracy=acc)
            entry["wall_time"] = time.perf_counter() - started
            metrics.log_round(entry)
            last = entry
            if (ckpt_every and (r + 1) % ckpt_every == 0) or r == t.comm_round - 1:
                save_checkpoint(
                    run_dir, round=r, params=params,
                    algorithm_state=algorithm.state_dict(),
                    defense_state=defense.state_dict() if defense is not None else None,
                )
    summary = {
        "run_dir": str(run_dir),
        "rounds": t.comm_round,
        "final_test_accuracy": last.get("test_accuracy"),
        "final_test_loss": last.get("test_loss"),
        "wall_time": time.perf_counter() - started,
    }
    (run_dir / "summary.json").write_text(yaml.safe_dump(summary))
    torch.save(params.cpu(), run_dir / "final_params.pt")
    return summary
