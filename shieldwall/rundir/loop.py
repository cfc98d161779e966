"""The round loop every round-based driver shares: resume, rounds, evaluation, checkpoints.

A driver supplies ``step(params, round) -> (params, record)``; :func:`run_rounds` runs it from
the first missing round to ``train_args.comm_round``, evaluates on the test set every
``validation_args.frequency_of_the_test`` rounds (and after the last), logs each round to
``metrics.jsonl``/TensorBoard, checkpoints every ``train_args.checkpoint_frequency`` rounds
and writes ``summary.json`` and ``final_params.pt``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

from shieldwall.algorithms.base import Algorithm, ModelDivergedError, evaluate
from shieldwall.atomic import save_atomic
from shieldwall.checkpoint import load_checkpoint, save_checkpoint
from shieldwall.config import ConfigError, ExperimentConfig
from shieldwall.config.fedml import fedml_semantics
from shieldwall.data import Dataset
from shieldwall.devices import select_device
from shieldwall.metrics import MetricsLogger, read_metrics
from shieldwall.metrics.text import perplexities
from shieldwall.rundir.changes import changes_at, config_changes, record_changes
from shieldwall.rundir.directory import (
    CONFIG_NAME,
    Resume,
    claim_run_dir,
    make_run_dir,
    record_config,
    release_run_dir,
    run_files,
    write_text_atomic,
)
from shieldwall.threads import configure_threads

__all__ = ["Stateful", "device_for", "finished_summary", "open_run", "open_run_dir",
           "run_rounds", "SUMMARY_NAME"]

SUMMARY_NAME = "summary.json"

log = logging.getLogger(__name__)


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def device_for(cfg: ExperimentConfig) -> torch.device:
    """The torch device of this process (``device_args``); sets torch's thread count."""
    configure_threads(cfg.device_args.num_threads)  # or from the launch (shared cores)
    if cfg.device_args.device:
        return select_device(cfg.device_args.device, "device_args.device")
    if cfg.device_args.using_gpu and torch.cuda.is_available():
        # One GPU per process under a launcher (torchrun's LOCAL_RANK, Open MPI's local rank).
        local = os.environ.get("LOCAL_RANK") or os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK")
        index = int(local or 0) % torch.cuda.device_count()
        return torch.device("cuda", index)
    if cfg.device_args.using_gpu:
        log.warning("device_args.using_gpu: true but no CUDA GPU is available: training runs on "
                    "the CPU")
    return torch.device("cpu")


def is_test_round(cfg: ExperimentConfig, r: int) -> bool:
    """Whether round ``r`` (0-based) is evaluated: FedML's ``r % freq == 0`` for FedML configs,
    else every ``freq``-th round; always the last."""
    every, last = cfg.validation_args.frequency_of_the_test, cfg.train_args.comm_round - 1
    if fedml_semantics(cfg):
        return r % every == 0 or r == last
    return (r + 1) % every == 0 or r == last


def open_run_dir(
    cfg: ExperimentConfig, resume: str | Path | None, start: int = 0
) -> Path:
    """The locked run directory of a run that continues at round ``start``.

    Fresh (``resume`` is ``None``): a new directory (:func:`make_run_dir`) with ``config.yaml``.
    Resumed: the lock of ``resume``; when rounds remain, what ``cfg`` changes is checked and
    recorded (:func:`~shieldwall.rundir.changes.config_changes`; ``resume`` may be a
    :class:`Resume` carrying ``force``).
    """
    if resume is None:
        run_dir = make_run_dir(cfg)
        record_config(run_dir, cfg)
        return run_dir
    run_dir = Path(resume)
    claim_run_dir(run_dir)
    if start < cfg.train_args.comm_round:
        force = isinstance(resume, Resume) and resume.force
        changes = config_changes(run_dir, cfg, start, force=force)
        record_changes(run_dir, changes)
        for c in changes:
            log.info("config change from round %d: %s %r -> %r (%s%s)", start, c["key"],
                     c["old"], c["new"], c["kind"], ", forced" if c.get("forced") else "")
    return run_dir


def _never_ran(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that ended before it recorded a round (its start failed,
    or round 0 had no usable row): no checkpoint, no summary, no metrics record to lose."""
    return set(run_files(run_dir)) <= {CONFIG_NAME, "metrics.jsonl"} and not read_metrics(run_dir)


def open_run(
    cfg: ExperimentConfig,
    resume: str | Path | None,
    initial_params: torch.Tensor,
    algorithm: Algorithm,
    defense: Stateful | None = None,
    adversary: Stateful | None = None,
) -> tuple[Path, torch.Tensor, int]:
    """The run directory, global vector and first round: fresh, or restored from a checkpoint.

    The directory is locked for this process (:func:`claim_run_dir`) until
    :func:`run_rounds` ends. A resumed defense (attack) whose configuration changed starts with
    fresh state (its old state belongs to the old rule or attack). A run that ended before it
    recorded a round (no checkpoint yet) starts again at round 0 in its own directory.
    """
    params, start = initial_params, 0
    if resume is not None and _never_ran(claim_run_dir(resume)):
        log.info("%s ended before its first round: it starts at round 0", Path(resume))
    elif resume is not None:
        run_dir = claim_run_dir(resume)  # before reading: no other writer from here on
        state = load_checkpoint(run_dir)
        params = state["params"].to(initial_params.device)
        if params.shape != initial_params.shape:
            raise ConfigError(
                f"the checkpoint of {str(run_dir)!r} holds {params.numel()} parameters but the "
                f"model of this config has {initial_params.numel()}: the model cannot change "
                "on --resume, even with --force"
            )
        algorithm.load_state_dict(state["algorithm"])
        start = int(state["round"]) + 1
        changed_keys = (
            [c["key"] for c in config_changes(run_dir, cfg, start, force=True)]
            if start < cfg.train_args.comm_round else []
        )
        for part, section, saved in (
            (defense, "defense_args.", "defense"), (adversary, "attack_args.", "attack")
        ):
            if part is None:
                continue
            if any(k.startswith(section) for k in changed_keys):
                log.info("the %s changed: it starts with fresh state at round %d", saved, start)
            else:
                part.load_state_dict(state.get(saved, {}))
        log.info("resuming %s at round %d", run_dir, start)
    run_dir = open_run_dir(cfg, resume, start)
    return run_dir, params, start


def finished_summary(run_dir: Path, cfg: ExperimentConfig, start: int) -> dict[str, Any]:
    """The summary of a run that has no round left to run (nothing is rewritten)."""
    log.info("%s has run %d rounds and train_args.comm_round is %d: nothing to do (raise "
             "train_args.comm_round to continue it)", run_dir, start, cfg.train_args.comm_round)
    path = run_dir / SUMMARY_NAME
    summary: dict[str, Any] = {}
    if path.is_file():
        try:
            summary = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            summary = {}
    if summary.get("final_test_accuracy") is None:  # rebuilt from the metrics
        evaluated = [r for r in read_metrics(run_dir) if r.get("test_accuracy") is not None]
        if evaluated:
            summary.update(final_test_accuracy=evaluated[-1]["test_accuracy"],
                           final_test_loss=evaluated[-1].get("test_loss"))
    summary.update(run_dir=str(run_dir), rounds=start)
    return summary


def run_rounds(
    cfg: ExperimentConfig,
    run_dir: Path,
    params: torch.Tensor,
    start: int,
    step: Callable[[torch.Tensor, int], tuple[torch.Tensor, dict[str, Any]]],
    algorithm: Algorithm,
    dataset: Dataset,
    defense: Stateful | None = None,
    adversary: Stateful | None = None,
) -> dict[str, Any]:
    """Rounds ``start..comm_round-1`` of ``step``, with evaluation, metrics and checkpoints.

    ``step(params, round)`` returns the next global vector and the round's metrics record.
    Returns the run's summary (also written to ``summary.json``).
    """
    t = cfg.train_args
    if start >= t.comm_round:
        release_run_dir(run_dir)
        return finished_summary(run_dir, cfg, start)
    try:
        return _rounds(
            cfg, run_dir, params, start, step, algorithm, dataset, defense, adversary
        )
    finally:
        release_run_dir(run_dir)


def _rounds(
    cfg: ExperimentConfig,
    run_dir: Path,
    params: torch.Tensor,
    start: int,
    step: Callable[[torch.Tensor, int], tuple[torch.Tensor, dict[str, Any]]],
    algorithm: Algorithm,
    dataset: Dataset,
    defense: Stateful | None,
    adversary: Stateful | None,
) -> dict[str, Any]:
    t = cfg.train_args
    changes = changes_at(run_dir, start) if start else []
    device = params.device
    test_x, test_y = dataset.test_x.to(device), dataset.test_y.to(device)
    ckpt_every = t.checkpoint_frequency
    last: dict[str, Any] = {}
    diverged: int | None = None
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
            try:
                params, entry = step(params, r)
            except ModelDivergedError as exc:
                log.warning("%s", exc)
                algorithm.flat.load(params)  # the model as it stands, before round r
                loss, acc = evaluate(algorithm.model, test_x, test_y)
                last = {"round": r, "diverged": str(exc), "test_loss": loss,
                        "test_accuracy": acc, "wall_time": time.perf_counter() - started}
                metrics.log_round(last)
                diverged = r
                break
            entry["round_time"] = time.perf_counter() - round_start
            if r == start and changes:
                entry["config_changes"] = changes
            if is_test_round(cfg, r):
                algorithm.flat.load(params)
                loss, acc = evaluate(algorithm.model, test_x, test_y)
                entry.update(test_loss=loss, test_accuracy=acc)
                entry.update(perplexities(dataset, entry))
            entry["wall_time"] = time.perf_counter() - started
            metrics.log_round(entry)
            last = entry
            if (ckpt_every and (r + 1) % ckpt_every == 0) or r == t.comm_round - 1:
                save_checkpoint(
                    run_dir, round=r, params=params,
                    algorithm_state=algorithm.state_dict(),
                    defense_state=defense.state_dict() if defense is not None else None,
                    attack_state=adversary.state_dict() if adversary is not None else None,
                )
    summary = {
        "run_dir": str(run_dir),
        "rounds": t.comm_round,
        "final_test_accuracy": last.get("test_accuracy"),
        "final_test_loss": last.get("test_loss"),
        "wall_time": time.perf_counter() - started,
        **({"eval_split": dataset.eval_split} if dataset.eval_split != "test" else {}),
        **{k: last[k] for k in ("test_perplexity", "train_perplexity") if k in last},
        **({"diverged_at_round": diverged, "diverged": last["diverged"]}
           if diverged is not None else {}),
    }
    save_atomic(params.cpu(), run_dir / "final_params.pt")
    write_text_atomic(run_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")  # last
    return summary
