"""Client-side process drivers: ``shieldwall client CONFIG --rank K`` and its silo processes.

A client process builds the same components as every other process
(:func:`shieldwall.drivers.rounds.build_components`: data partitioned over ``client_num_in_total``,
model, algorithm, data attack), keeps only its own shard (part ``K - 1``) under its round index
(its position in ``client_id_list``), and serves rounds. With ``client_silo_args`` asking for
more than one trainer per silo, the process on node ``node_rank_in_silo`` starts
``n_proc_per_node - 1`` more local processes (spawned, one torch thread each) and all of them
form the silo's DDP group (:mod:`.silo`); silo rank 0 is the one that talks to the server.

Start-up order: join once (a refused identity stops here, before any data is loaded), load the
shard, run one throw-away update (:meth:`ClientExecutor.warm_up`, as the torch.distributed
workers do), then join again as *ready*: the server starts round 0 when every client is ready.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import time
from typing import Any

import torch

from shieldwall.config import ConfigError, ExperimentConfig
from shieldwall.runtime.base import ClientExecutor
from shieldwall.runtime.net.client import GrpcClientRuntime
from shieldwall.runtime.net.settings import NetSettings, client_ids, load_tokens

__all__ = ["run_client", "build_client_executor", "check_rank", "client_token", "silo_layout",
           "silo_worker"]

log = logging.getLogger(__name__)


def client_token(cfg: ExperimentConfig, client_id: int, token: str | None = None) -> str:
    """This client's token: ``token``, else ``$SHIELDWALL_TOKEN``, else the configured one."""
    if token:
        return token
    if os.environ.get("SHIELDWALL_TOKEN"):
        return os.environ["SHIELDWALL_TOKEN"]
    return load_tokens(cfg).get(client_id, "")


def _parts(cfg: ExperimentConfig) -> int:
    return cfg.comm_args.partition_parts or cfg.train_args.client_num_in_total


def check_rank(cfg: ExperimentConfig, client_id: int) -> int:
    """Client ``K``'s round index; :class:`ConfigError` naming the valid ranks if ``K`` is not
    a client of this config or has no data part."""
    ids = client_ids(cfg)
    if client_id not in ids:
        shown = ", ".join(map(str, ids[:20])) + (", ..." if len(ids) > 20 else "")
        raise ConfigError(f"--rank {client_id} is not a client of this config: the valid ranks "
                          f"are {shown} (train_args.client_id_list)")
    if client_id - 1 >= _parts(cfg):
        raise ConfigError(
            f"client {client_id} would host data part {client_id - 1}, but the data are split "
            f"into train_args.client_num_in_total = {_parts(cfg)} parts"
        )
    return ids.index(client_id)


def build_client_executor(
    cfg: ExperimentConfig, client_id: int, components: Any = None
) -> tuple[ClientExecutor, int]:
    """The executor hosting client ``K``'s shard under its round index; and that index.

    ``components``: already built (FedML's API), else built from ``cfg``. With FedML's semantics
    and more data parts than silos, the silo hosts every part and trains the one FedML's
    ``data_silo_selection`` gives it each round (:mod:`.parts`)."""
    from shieldwall.algorithms.base import ClientData
    from shieldwall.config.fedml import fedml_semantics
    from shieldwall.drivers.rounds import build_components
    from shieldwall.runtime.net.parts import PartSelectingExecutor

    index, part = check_rank(cfg, client_id), client_id - 1
    if _parts(cfg) != cfg.train_args.client_num_in_total:  # the server's recorded view
        cfg = dataclasses.replace(cfg, train_args=dataclasses.replace(
            cfg.train_args, client_num_in_total=_parts(cfg), client_num_per_round=None))
    if fedml_semantics(cfg) and cfg.train_args.client_num_in_total > len(client_ids(cfg)):
        parts = components if components is not None else build_components(cfg)
        return PartSelectingExecutor.from_components(cfg, parts, index), index
    parts = components if components is not None else build_components(cfg)
    shard = parts.shards[part]
    executor = ClientExecutor(
        parts.algorithm, {index: ClientData(index, shard.x, shard.y)},
        cfg.common_args.random_seed,
        parts.adversary.data_attack() if parts.adversary else None,
    )
    return executor, index


def silo_layout(cfg: ExperimentConfig, client_id: int) -> tuple[int, str, int]:
    """``(world size, master address, master port)`` of client ``K``'s silo."""
    s = cfg.client_silo_args
    world = max(s.n_node_in_silo, 1) * max(s.n_proc_per_node, 1)
    ids = client_ids(cfg)
    if client_id not in ids:
        raise ConfigError(f"--rank {client_id} is not a client of train_args.client_id_list "
                          f"{ids} (the server is rank 0)")
    port = s.pg_master_port + ids.index(client_id)
    return world, s.pg_master_address, port


def _group_timeout(cfg: ExperimentConfig) -> float:
    c = cfg.comm_args
    return c.join_timeout + c.reconnect_timeout + 2 * c.round_timeout + 60.0


def run_client(
    cfg: ExperimentConfig, client_id: int, *, node_rank: int | None = None,
    token: str | None = None,
) -> int:
    """Serve as client ``K`` (and, in a silo, as this node's trainers); rounds answered."""
    check_rank(cfg, client_id)
    world, address, port = silo_layout(cfg, client_id)
    node_rank = cfg.client_silo_args.node_rank_in_silo if node_rank is None else node_rank
    if world == 1:
        runtime = _runtime(cfg, client_id, token, 1)
        runtime.check_in()  # a refused client stops here, before loading any data
        runtime.executor, index = build_client_executor(cfg, client_id)
        _warm_up(runtime.executor, client_id, index)
        runtime.serve()
        return runtime.rounds_done
    per_node = max(cfg.client_silo_args.n_proc_per_node, 1)
    if not 0 <= node_rank < world // per_node:
        raise ConfigError(f"node rank {node_rank} is outside the silo's "
                          f"{world // per_node} nodes (client_silo_args.n_node_in_silo)")
    runtime = _runtime(cfg, client_id, token, world)
    if node_rank == 0:
        runtime.check_in()  # refused: no trainers started
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ctx = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    children = [
        ctx.Process(target=silo_worker, daemon=True,
                    args=(cfg, client_id, node_rank * per_node + local, world, level))
        for local in range(1, per_node)
    ]
    for child in children:
        child.start()
    try:
        return _silo_process(cfg, client_id, node_rank * per_node, world, runtime)
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.terminate()


def _warm_up(executor: ClientExecutor, client_id: int, index: int) -> None:
    started = time.perf_counter()
    executor.warm_up()
    hosted = getattr(executor, "parts", executor.shards)  # every part, for FedML's selection
    log.info("client %d: %d samples loaded, warmed up in %.1fs; ready for rounds", client_id,
             sum(len(shard) for shard in hosted.values()), time.perf_counter() - started)


def _runtime(cfg: ExperimentConfig, client_id: int, token: str | None,
             silo: int) -> GrpcClientRuntime:
    settings = NetSettings.from_config(cfg, f"client-{client_id}")
    return GrpcClientRuntime(settings, None, client_id, client_token(cfg, client_id, token),
                             silo=silo)


def _silo_process(cfg: ExperimentConfig, client_id: int, rank: int, world: int,
                  runtime: GrpcClientRuntime | None) -> int:
    """One silo process; silo rank 0 serves the server with ``runtime`` (the one that checked
    in, so that its session carries over)."""
    import torch.distributed as dist

    from shieldwall.runtime.net.silo import SiloExecutor, init_silo_group

    _, address, port = silo_layout(cfg, client_id)
    executor, index = build_client_executor(cfg, client_id)
    _warm_up(executor, client_id, index)
    init_silo_group(address, port, rank, world, _group_timeout(cfg))
    try:
        silo = SiloExecutor(executor, index)
        if rank != 0:
            return silo.follow()
        log.info("client %d: silo of %d DDP processes (gloo at %s:%d)", client_id, world,
                 address, port)
        assert runtime is not None, "silo rank 0 talks to the server"
        runtime.executor = silo
        try:
            runtime.serve()
        finally:
            silo.stop()
        return runtime.rounds_done
    finally:
        dist.destroy_process_group()


def silo_worker(cfg: ExperimentConfig, client_id: int, rank: int, world: int, level: Any) -> None:
    """A spawned silo process (local rank > 0): join the group and follow rank 0."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(cfg.device_args.num_threads or 1)
    _silo_process(cfg, client_id, rank, world, _runtime(cfg, client_id, None, world))
