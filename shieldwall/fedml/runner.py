"""Running a FedML script's training: ``FedMLRunner(...).run()``, the cross-silo server and
client (silos with DDP trainers inside), and FedML's one-line entry points.

Where each process comes from is FedML's: ``mpirun -np N+1 python torch_mpi.py --cf …`` starts
every rank of a torch.distributed run (rank 0 serves, the others train the clients);
``python torch_server.py --cf … --rank 0`` is the networked (gRPC) server and ``python
torch_client.py --cf … --rank K`` silo ``K``. A silo of ``n_node_in_silo × n_proc_per_node``
trainers runs the user's script in every trainer process, as FedML's ``client_dist_launcher.py``
(torchrun) does: started by torchrun, each process joins the silo's DDP group from torchrun's
environment; started by hand, the process starts the node's other trainers itself by running
the same script with torchrun's variables set. Every process loads the data (the script runs in
every process, as in FedML); only the silo's rank 0 talks to the server.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from typing import Any

import torch
from torch import nn

from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import ExperimentConfig
from shieldwall.fedml.components import components_from_fedml

__all__ = ["FedMLRunner", "run_server", "run_client", "launched"]

log = logging.getLogger("shieldwall.fedml")


def launched() -> bool:
    """Whether mpirun or torchrun (or a hand launch with their variables) started us."""
    env = os.environ
    return "OMPI_COMM_WORLD_SIZE" in env or ("RANK" in env and "WORLD_SIZE" in env)


def _report(summary: dict[str, Any]) -> None:
    if summary:
        acc = summary.get("final_test_accuracy")
        acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%"
        print(f"final test accuracy: {acc_text}  (run directory: {summary['run_dir']})",
              flush=True)


def _train(cfg: ExperimentConfig, parts: Any) -> dict[str, Any]:
    import shieldwall.algorithms  # noqa: F401  (before shieldwall.runtime: import cycle)
    from shieldwall.train import train

    return train(cfg, components=parts)


def run_server(args: Any, device: torch.device, dataset: Any, model: nn.Module) -> dict:
    """The cross-silo server (FedML's rank 0): gRPC, one client per ``client_id_list`` id."""
    import shieldwall.algorithms  # noqa: F401
    import shieldwall.runtime.net  # noqa: F401  (registers runtime "grpc")
    from shieldwall.algorithms.adversary import build_adversary
    from shieldwall.algorithms.defense import defense_f
    from shieldwall.runtime.net import network_view

    cfg, parts = components_from_fedml(args.config(), dataset, model, device, with_shards=False)
    net = network_view(cfg)
    parts.adversary = build_adversary(net, parts.dataset.num_classes)
    parts.f = defense_f(net)
    if net.defense_args.enable_defense:
        parts.defense.check_tolerates(net.train_args.client_num_per_round, parts.f)
    summary = _train(net, parts)
    _report(summary)
    return summary


def _client_id(args: Any, cfg: ExperimentConfig) -> int:
    from shieldwall.runtime.net.settings import client_ids

    ids = client_ids(cfg)
    rank = int(args.rank)
    if rank not in ids:
        raise ConfigError(f"--rank {rank} is not a client of train_args.client_id_list {ids} "
                          "(the server is --rank 0)")
    return rank


def run_client(args: Any, device: torch.device, dataset: Any, model: nn.Module) -> int:
    """Cross-silo client ``args.rank`` (a silo with DDP trainers when configured); rounds done."""
    import shieldwall.algorithms  # noqa: F401
    from shieldwall.runtime.net.node import build_client_executor, silo_layout

    cfg = args.config()
    client_id = _client_id(args, cfg)
    world, address, port = silo_layout(cfg, client_id)
    env = os.environ
    if world > 1 and not ("RANK" in env and "WORLD_SIZE" in env):
        return _start_silo(cfg, client_id, world, address, port, args, device, dataset, model)
    cfg, parts = components_from_fedml(cfg, dataset, model, device)
    executor, index = build_client_executor(cfg, client_id, components=parts)
    if world == 1 and "WORLD_SIZE" not in env:
        runtime = _runtime(cfg, client_id, 1)
        runtime.check_in()
        runtime.executor = executor
        runtime.serve()
        return runtime.rounds_done
    return _silo_member(cfg, client_id, executor, index)


def _runtime(cfg: ExperimentConfig, client_id: int, silo: int) -> Any:
    from shieldwall.runtime.net.node import _runtime as make

    return make(cfg, client_id, None, silo)


def _silo_member(cfg: ExperimentConfig, client_id: int, executor: Any, index: int) -> int:
    """A silo trainer under torchrun's variables: join the DDP group, serve or follow rank 0."""
    import torch.distributed as dist

    from shieldwall.runtime.net.node import _group_timeout
    from shieldwall.runtime.net.silo import SiloExecutor, init_silo_group

    env = os.environ
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    address = env.get("MASTER_ADDR", cfg.client_silo_args.pg_master_address)
    port = int(env.get("MASTER_PORT", cfg.client_silo_args.pg_master_port))
    torch.set_num_threads(cfg.device_args.num_threads or 1)
    init_silo_group(address, port, rank, world, _group_timeout(cfg))
    try:
        silo = SiloExecutor(executor, index)
        if rank != 0:
            return silo.follow()
        log.info("client %d: silo of %d DDP processes (gloo at %s:%d)", client_id, world,
                 address, port)
        runtime = _runtime(cfg, client_id, world)
        runtime.executor = silo
        try:
            runtime.serve()
        finally:
            silo.stop()
        print(f"client {client_id}: done, {runtime.rounds_done} rounds answered", flush=True)
        return runtime.rounds_done
    finally:
        dist.destroy_process_group()


def _start_silo(cfg: ExperimentConfig, client_id: int, world: int, address: str, port: int,
                args: Any, device: torch.device, dataset: Any, model: nn.Module) -> int:
    """Start this node's other trainers (the same script, torchrun's variables), then train."""
    per_node = max(cfg.client_silo_args.n_proc_per_node, 1)
    node = cfg.client_silo_args.node_rank_in_silo
    if not 0 <= node < world // per_node:
        raise ConfigError(f"client_silo_args.node_rank_in_silo {node} is outside the silo's "
                          f"{world // per_node} nodes (n_node_in_silo)")
    base = {"WORLD_SIZE": str(world), "MASTER_ADDR": address, "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    children = []
    for local in range(1, per_node):
        env = {**os.environ, **base, "RANK": str(node * per_node + local),
               "LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": str(per_node)}
        children.append(subprocess.Popen([sys.executable, *sys.argv], env=env))
    log.info("client %d: started %d more trainer process(es) of the silo (%s)", client_id,
             len(children), " ".join(sys.argv))
    os.environ.update({**base, "RANK": str(node * per_node), "LOCAL_RANK": "0",
                       "LOCAL_WORLD_SIZE": str(per_node)})
    try:
        cfg2, parts = components_from_fedml(cfg, dataset, model, device)
        from shieldwall.runtime.net.node import build_client_executor

        executor, index = build_client_executor(cfg2, client_id, components=parts)
        return _silo_member(cfg2, client_id, executor, index)
    finally:
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.terminate()


class FedMLRunner:
    """FedML's ``FedMLRunner(args, device, dataset, model)``: ``run()`` trains by
    ``training_type``: ``simulation`` (the simulator, or torch.distributed under mpirun/torchrun),
    ``cross_silo`` (under mpirun: torch.distributed, as FedML's MPI examples; else the networked
    server for ``--rank 0`` and a silo for any other rank). ``client_trainer`` /
    ``server_aggregator`` (FedML's customisation hooks) are refused: shieldwall's trainer and
    aggregation are its algorithms and defenses."""

    def __init__(self, args: Any, device: torch.device, dataset: Any, model: nn.Module,
                 client_trainer: Any = None, server_aggregator: Any = None) -> None:
        if client_trainer is not None or server_aggregator is not None:
            raise ConfigError(
                "FedMLRunner(client_trainer=…, server_aggregator=…): custom FedML trainers and "
                "aggregators are not supported; local training is train_args' algorithm "
                "(FedAvg, FedProx, FedOpt…) and aggregation is defense_args' defense")
        self.args, self.device, self.dataset, self.model = args, device, dataset, model

    def run(self) -> Any:
        cfg = self.args.config()
        kind = str(cfg.common_args.training_type).lower()
        if kind == "cross_device":
            raise ConfigError(
                "common_args.training_type: cross_device (FedML's mobile/MNN clients) is not "
                "supported; use simulation (one process or mpirun) or cross_silo")
        hierarchical = str(cfg.common_args.scenario).lower() == "hierarchical"
        if kind == "cross_silo" and (hierarchical or not launched()):
            if int(self.args.rank) == 0:
                return run_server(self.args, self.device, self.dataset, self.model)
            return run_client(self.args, self.device, self.dataset, self.model)
        cfg, parts = components_from_fedml(cfg, self.dataset, self.model, self.device)
        summary = _train(cfg, parts)
        _report(summary)
        return summary


def with_training_type(args: Any, kind: str) -> Any:
    """FedML's entry points fix the training type (``fedml._global_training_type``)."""
    cfg = args.config()
    if str(cfg.common_args.training_type).lower() != kind:
        log.info("common_args.training_type %s: this entry point runs %s",
                 cfg.common_args.training_type, kind)
        args.training_type = kind
        common = dataclasses.replace(cfg.common_args, training_type=kind)
        object.__setattr__(args, "_cfg", dataclasses.replace(cfg, common_args=common))
    return args
