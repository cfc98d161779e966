"""The training driver: build components from a config, run the rounds, clean up.

Kept thin on purpose (torchtitan's ``train.py``): every decision lives in a component —
:func:`build_components` assembles data, model, algorithm, runtime, defense and adversary;
:func:`train` loops over rounds, evaluates, logs and checkpoints.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

from shieldwall.algorithms import ALGORITHMS
from shieldwall.algorithms.adversary import Adversary, build_adversary
from shieldwall.algorithms.base import Algorithm, ClientData, evaluate
from shieldwall.algorithms.defense import Defense, build_defense, defense_f
from shieldwall.checkpoint import load_checkpoint, save_checkpoint
from shieldwall.config import ConfigError, ExperimentConfig, config_to_dict
from shieldwall.data import Dataset, load_dataset
from shieldwall.data.partition import class_histogram, format_histogram, partition_indices
from shieldwall.metrics import MetricsLogger
from shieldwall.models import MODELS
from shieldwall.registry import UnknownNameError
from shieldwall.runtime import RUNTIMES, ClientExecutor, Runtime
from shieldwall.seeding import derive_seed

__all__ = [
    "Components",
    "build_components",
    "train",
    "select_runtime",
    "make_run_dir",
    "open_run",
    "run_rounds",
]

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything a run is made of."""

    cfg: ExperimentConfig
    device: torch.device
    dataset: Dataset
    shards: dict[int, ClientData]
    algorithm: Algorithm
    defense: Defense
    adversary: Adversary | None
    f: int
    initial_params: torch.Tensor


def select_runtime(cfg: ExperimentConfig) -> str:
    """The runtime to use: ``comm_args.runtime``, or for ``auto`` the launcher's environment."""
    choice = cfg.comm_args.runtime.lower()
    if choice != "auto":
        return choice
    launched = "OMPI_COMM_WORLD_SIZE" in os.environ or (
        "RANK" in os.environ and "WORLD_SIZE" in os.environ
    )
    if launched and "torch_distributed" in RUNTIMES:
        return "torch_distributed"
    return "simulator"


def _device(cfg: ExperimentConfig) -> torch.device:
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


def build_components(cfg: ExperimentConfig) -> Components:
    """Data, shards, model, algorithm, defense and adversary for ``cfg``; checks they fit."""
    t = cfg.train_args
    seed = cfg.common_args.random_seed
    try:
        dataset = load_dataset(cfg.data_args.dataset, cfg.data_args.data_cache_dir)
        model_factory = MODELS.entry(cfg.model_args.model)
        algorithm_cls = ALGORITHMS.get(t.federated_optimizer)
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from None
    device = _device(cfg)
    adversary = build_adversary(cfg, dataset.num_classes)
    parts = partition_indices(
        dataset.train_y,
        t.client_num_in_total,
        cfg.data_args.partition_method,
        alpha=cfg.data_args.partition_alpha,
        seed=seed,
        min_size=cfg.data_args.partition_min_size,
        byzantine=adversary.byzantine_ids(0) if adversary and not adversary.redraw else (),
    )
    if log.isEnabledFor(logging.DEBUG):
        hist = class_histogram(dataset.train_y, parts, dataset.num_classes)
        log.debug("per-client class histogram:\n%s", format_histogram(hist))
    train_x, train_y = dataset.train_x.to(device), dataset.train_y.to(device)
    shards = {
        c: ClientData(c, train_x[idx.to(device)], train_y[idx.to(device)])
        for c, idx in enumerate(parts)
    }
    torch.manual_seed(derive_seed(seed, "init"))
    model = model_factory.obj(dataset.input_shape, dataset.num_classes)
    algorithm = algorithm_cls(t, model, device)
    defense = build_defense(cfg)
    f = defense_f(cfg)
    per_round = t.client_num_per_round or t.client_num_in_total
    if cfg.defense_args.enable_defense:
        defense.check_tolerates(per_round, f)
    return Components(
        cfg, device, dataset, shards, algorithm, defense, adversary, f,
        algorithm.flat.vector(),
    )


def build_runtime(name: str, cfg: ExperimentConfig, executor: ClientExecutor) -> Runtime:
    try:
        runtime_cls = RUNTIMES.get(name)
    except UnknownNameError as exc:
        raise ConfigError(f"comm_args.runtime: {exc}") from None
    return runtime_cls.from_config(cfg, executor)


def make_run_dir(cfg: ExperimentConfig) -> Path:
    name = cfg.tracking_args.run_name or f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.tracking_args.log_file_dir).expanduser() / name
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train(cfg: ExperimentConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Run ``cfg`` to its last round; returns the summary (also written to ``summary.json``)."""
    if str(cfg.train_args.federated_optimizer).upper() == "BTARD":  # serverless: own driver
        from shieldwall.btard import run_btard
        return run_btard(cfg, resume=resume)
    if cfg.redundancy_args.enable:  # per-file vote (DETOX/ByzShield): own driver
        from shieldwall.redundancy.training import run_redundant
        return run_redundant(cfg, resume=resume)
    from shieldwall.algorithms.server import Server

    parts = build_components(cfg)
    executor = ClientExecutor(
        parts.algorithm,
        parts.shards,
        cfg.common_args.random_seed,
        parts.adversary.data_attack() if parts.adversary else None,
    )
    runtime = build_runtime(select_runtime(cfg), cfg, executor)
    try:
        if not runtime.is_server:
            runtime.serve()
            return {}
        return _serve_rounds(cfg, parts, runtime, Server, resume)
    finally:
        runtime.close()


def _serve_rounds(
    cfg: ExperimentConfig, parts: Components, runtime: Runtime, server_cls: type, resume: Any
) -> dict[str, Any]:
    t = cfg.train_args
    server = server_cls(
        parts.algorithm,
        runtime,
        parts.defense,
        parts.adversary,
        num_clients=t.client_num_in_total,
        clients_per_round=t.client_num_per_round or t.client_num_in_total,
        f=parts.f,
        seed=cfg.common_args.random_seed,
        max_update_norm=cfg.comm_args.max_update_norm,
    )
    run_dir, params, start = open_run(
        cfg, resume, parts.initial_params, parts.algorithm, parts.defense
    )
    log.info(
        "run %s: %s on %s, %s, %d clients (%s), defense %s, attack %s",
        run_dir, t.federated_optimizer, cfg.data_args.dataset, cfg.model_args.model,
        t.client_num_in_total,
        f"{parts.adversary.num_byzantine} Byzantine" if parts.adversary else "none Byzantine",
        parts.defense.label, parts.adversary.name if parts.adversary else "none",
    )

    def step(params: torch.Tensor, r: int) -> tuple[torch.Tensor, dict[str, Any]]:
        params, record = server.round(params, r)
        return params, record.as_dict()

    return run_rounds(
        cfg, run_dir, params, start, step, parts.algorithm, parts.dataset, parts.defense
    )


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
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

