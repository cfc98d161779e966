"""The server round loop (PS-SGD, FedAvg, hierarchical FedAvg) on any runtime: the default driver.

:func:`build_components` assembles data, shards, model, algorithm, defense and adversary from a
config; :func:`rounds` picks the runtime (simulator, torch.distributed, gRPC), runs the server's
rounds through :func:`shieldwall.rundir.run_rounds` on the serving process and the clients'
work on the others.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shieldwall.algorithms import ALGORITHMS
from shieldwall.algorithms.adversary import Adversary, build_adversary
from shieldwall.algorithms.base import Algorithm, ClientData
from shieldwall.algorithms.defense import Defense, build_defense, defense_f
from shieldwall.config import ConfigError, ExperimentConfig
from shieldwall.config.fedml import fedml_semantics
from shieldwall.data import Dataset, load_dataset
from shieldwall.data.partition import class_histogram, format_histogram
from shieldwall.data.split import split_clients
from shieldwall.drivers import DRIVERS
from shieldwall.models import MODELS, build_model
from shieldwall.registry import UnknownNameError
from shieldwall.rundir import device_for, open_run, run_rounds
from shieldwall.runtime import RUNTIMES, ClientExecutor, Runtime
from shieldwall.runtime.agreement import check_data_agreement
from shieldwall.seeding import derive_seed

__all__ = ["Components", "build_components", "build_runtime", "rounds", "select_runtime"]

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
        world = int(os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("WORLD_SIZE") or 1)
        workers = cfg.device_args.worker_num
        if workers is not None and workers + 1 != world:
            log.warning("device_args.worker_num is %d but the launcher started %d processes: "
                        "FedML stops (it needs worker_num + 1); shieldwall runs 1 server and %d "
                        "worker processes, clients spread over them", workers, world, world - 1)
        return "torch_distributed"
    return "simulator"


def fedml_model_name(cfg: ExperimentConfig) -> str:
    """``model_args.model``, or FedML's own ``lr`` (with its sigmoid) for FedML configs."""
    name = cfg.model_args.model
    if fedml_semantics(cfg) and str(name).strip().lower() == "lr":
        return "fedml_lr"
    return name


def build_components(cfg: ExperimentConfig) -> Components:
    """Data, shards, model, algorithm, defense and adversary for ``cfg``; checks they fit."""
    t = cfg.train_args
    seed = cfg.common_args.random_seed
    try:
        dataset = load_dataset(cfg.data_args.dataset, cfg.data_args.data_cache_dir, cfg.text_args)
        MODELS.entry(fedml_model_name(cfg))
        algorithm_cls = ALGORITHMS.get(t.federated_optimizer)
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from None
    device = device_for(cfg)
    adversary = build_adversary(cfg, dataset.num_classes)
    parts = split_clients(
        cfg, dataset.partition_labels,
        byzantine=adversary.byzantine_ids(0) if adversary and not adversary.redraw else (),
    )
    if log.isEnabledFor(logging.DEBUG) and dataset.train_y.dim() == 1:
        hist = class_histogram(dataset.train_y, parts, dataset.num_classes)
        log.debug("per-client class histogram:\n%s", format_histogram(hist))
    train_x, train_y = dataset.train_x.to(device), dataset.train_y.to(device)
    shards = {
        c: ClientData(c, train_x[idx.to(device)], train_y[idx.to(device)])
        for c, idx in enumerate(parts)
    }
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_model(fedml_model_name(cfg), dataset.input_shape, dataset.num_classes,
                        cfg.text_args, text=dataset.train_y.dim() > 1)
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


@DRIVERS.register("rounds", default=True, claim="any other config")
def rounds(
    cfg: ExperimentConfig, *, resume: str | Path | None = None,
    components: Components | None = None,
) -> dict[str, Any]:
    """The server's rounds on the serving process, the clients' work on the others.

    ``components``: already built (FedML's API with a user's own data set and model), else built
    from ``cfg``."""
    from shieldwall.algorithms.server import Server

    parts = components if components is not None else build_components(cfg)
    executor = ClientExecutor(
        parts.algorithm,
        parts.shards,
        cfg.common_args.random_seed,
        parts.adversary.data_attack() if parts.adversary else None,
    )
    runtime = build_runtime(select_runtime(cfg), cfg, executor)
    try:
        check_data_agreement(parts.dataset)  # e.g. one vocabulary on every torchrun rank
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
        cfg, resume, parts.initial_params, parts.algorithm, parts.defense, parts.adversary
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
        cfg, run_dir, params, start, step, parts.algorithm, parts.dataset, parts.defense,
        parts.adversary,
    )
