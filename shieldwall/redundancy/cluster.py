"""DETOX/ByzShield on real processes: rank 0 is the parameter server, ranks 1…K the workers.

ByzShield runs ``mpirun -n K+1 --hostfile …``: the PS broadcasts the model, worker k computes the
gradient of every file the placement gives it and sends them, the PS votes per file and
aggregates. Here the same protocol rides on the torch.distributed runtime
(:class:`~shieldwall.runtime.torch_dist.TorchDistributedRuntime`) and its wire hygiene
(:mod:`~shieldwall.runtime.wire`: fixed-size frames into NaN-prefilled buffers, every header
field checked, norm bound, per-rank process groups, ``round_timeout`` and ``on_worker_loss``):

* world size n = K + 1 (ByzShield's ``n``); worker k is rank k + 1;
* a *client* of the runtime is one (worker, slot) pair: client ``c = k + K·j`` is worker k's j-th
  file ``files_of_worker[k][j]``, so the runtime's ``1 + c mod K`` puts it on rank k + 1 and
  each rank answers l = load frames per step, one per file;
* every rank derives the step's batch from the seed (as ByzShield's workers share seeds), so a
  worker touches only the samples of its own files; it computes them with the gradient function
  it is given (:func:`~.training.file_gradients`: ``vmap`` over its l files);
* ByzShield's worker-level attacks (``rev_grad``, ``constant``: :data:`WORKER_ATTACKS`) run on the
  adversarial workers themselves, which send the bad rows over the wire (the task header's
  poisoned flags say which); the others (ALIE, …) need every honest file gradient and are
  simulated at the PS on the received rows, as ByzShield's master does (``_LIE_attack_simulation``);
* a lost worker's frames are NaN: its replicas lose every vote they take part in, and a file none
  of whose replicas arrived is left out of the aggregation (see :mod:`.driver`).

Workers run the same config as the PS (same seed, data set, placement) and keep no state between
steps: a resumed run may use fresh worker processes.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import Tensor

from shieldwall.algorithms.base import LocalResult
from shieldwall.config import ConfigError
from shieldwall.redundancy.setup import RedundantSetup
from shieldwall.runtime.base import RoundPlan
from shieldwall.seeding import torch_generator

__all__ = [
    "WORKER_ATTACKS",
    "launched",
    "client_id",
    "FileExecutor",
    "RedundancyCluster",
    "step_indices",
]

log = logging.getLogger(__name__)

WORKER_ATTACKS = frozenset({"reversed_gradient", "constant"})
"""Attacks whose row for a file depends on that file's gradient only: the adversarial worker
computes them (ByzShield's worker-level ``rev_grad`` and ``constant``)."""


def launched(cfg: Any) -> bool:
    """Whether this process is one rank of a multi-process run (``comm_args.runtime``; for
    ``auto``: a torchrun/mpirun environment with more than one rank)."""
    choice = str(cfg.comm_args.runtime).lower()
    if choice in ("simulator", "grpc"):
        return False
    env = os.environ
    world = env.get("WORLD_SIZE") or env.get("OMPI_COMM_WORLD_SIZE")
    if choice == "torch_distributed":
        return True
    return world is not None and int(world) > 1


def client_id(worker: int, slot: int, num_workers: int) -> int:
    """The runtime client of worker ``worker``'s ``slot``-th file (lives on rank worker + 1)."""
    return worker + num_workers * slot


def step_indices(
    num_samples: int, num_files: int, per_file: int, seed: int, step: int, epochs: bool
) -> Tensor:
    """``(F, b)`` sample indices of ``step``: the in-process driver's draw
    (:func:`~.training.draw_files`, or :func:`~.schedule.epoch_indices` under ``epochs``)."""
    from shieldwall.redundancy.schedule import epoch_indices

    if epochs:
        return epoch_indices(num_samples, num_files, per_file, seed, step)
    need = num_files * per_file
    if need > num_samples:
        raise ValueError(
            f"a step needs F·b = {num_files}·{per_file} = {need} samples but the training set "
            f"has {num_samples}; lower redundancy_args.files_batch_size"
        )
    gen = torch_generator(seed, "rd-batch", step)
    return torch.randperm(num_samples, generator=gen)[:need].reshape(num_files, per_file)


class FileExecutor:
    """A worker rank's side: the gradients of its own files (a ``ClientExecutor`` look-alike).

    The first frame asked for in a step computes all l file gradients of the worker at once;
    the other slots of that step are served from the cache.
    """

    def __init__(
        self, algorithm: Any, setup: RedundantSetup, worker: int | None, train_x: Tensor,
        train_y: Tensor, per_file: int, seed: int, *, epochs: bool, num_classes: int,
        file_gradients: Any,
    ) -> None:
        self.algorithm = algorithm
        self.file_gradients = file_gradients  # (model, flat, params, x, y) -> (rows, losses)
        self.setup = setup
        self.worker = worker
        self.train_x, self.train_y = train_x, train_y
        self.per_file = per_file
        self.seed = seed
        self.epochs = epochs
        self.num_classes = num_classes
        p = setup.placement
        clients = p.num_workers * p.load
        self.shards = {c: range(per_file) for c in range(clients)}  # sizes, for sample bounds
        self._cache: tuple[int, Tensor, Tensor] | None = None

    @property
    def dim(self) -> int:
        return self.algorithm.flat.dim

    def _rows(self, params: Tensor, step: int, poisoned: bool) -> tuple[Tensor, Tensor]:
        if self._cache is not None and self._cache[0] == step:
            return self._cache[1], self._cache[2]
        p = self.setup.placement
        files = p.files_of_worker[self.worker]
        idx = step_indices(int(self.train_y.shape[0]), p.num_files, self.per_file, self.seed,
                           max(step, 0), self.epochs)[files]
        flat_idx = idx.reshape(-1).to(self.train_y.device)
        x = self.train_x[flat_idx].reshape(len(files), self.per_file, *self.train_x.shape[1:])
        y = self.train_y[flat_idx].reshape(len(files), self.per_file)
        rows, losses = self.file_gradients(self.algorithm.model, self.algorithm.flat, params, x, y)
        if poisoned:
            rows = self._attack(rows, params, step)
        if step >= 0:
            self._cache = (step, rows, losses)
        return rows, losses

    def _attack(self, rows: Tensor, params: Tensor, step: int) -> Tensor:
        from shieldwall.attacks import ATTACKS, AttackContext

        s = self.setup
        ctx = AttackContext(
            n=s.placement.num_files, f=s.f, round=step,
            generator=torch_generator(self.seed, "rd-attack", step),
            reference=params, num_classes=self.num_classes,
        )
        return ATTACKS.get(s.attack)(rows, rows.shape[0], ctx, **s.attack_params)

    def run(self, params: Tensor, plan: RoundPlan, client: int) -> LocalResult:
        k = self.setup.placement.num_workers
        worker, slot = client % k, client // k
        if worker != self.worker:
            raise ValueError(f"client {client} is worker {worker}'s, not worker {self.worker}'s")
        rows, losses = self._rows(params, plan.round, client in plan.poisoned_ids)
        return LocalResult(rows[slot], self.per_file, float(losses[slot]))


class RedundancyCluster:
    """The PS's (rank 0) or a worker's (ranks 1…K) end of a multi-process redundant run.

    Args:
        cfg: the run's config (``comm_args`` for timeouts, bounds and ``on_worker_loss``).
        setup: the resolved placement, adversaries and attack.
        executor: this rank's :class:`FileExecutor`.
    """

    def __init__(self, cfg: Any, setup: RedundantSetup, executor: FileExecutor) -> None:
        from shieldwall.runtime.launch import choose_backend, detect_launch
        from shieldwall.runtime.torch_dist import TorchDistributedRuntime

        launch = detect_launch()
        p = setup.placement
        k = p.num_workers
        if launch.world_size != k + 1:
            raise ConfigError(
                f"a multi-process redundant run has one parameter server and one process per "
                f"worker: n = K + 1 = {k + 1} processes for K = {k} "
                f"(train_args.client_num_in_total), but the world size is {launch.world_size}"
            )
        # every rank checks what would otherwise fail one rank after the rendezvous (the PS
        # would then wait for workers that already left)
        step_indices(int(executor.train_y.shape[0]), p.num_files, executor.per_file,
                     executor.seed, 0, executor.epochs)
        self.setup = setup
        self.num_workers = k
        self.load = p.load
        self.worker = None if launch.rank == 0 else launch.rank - 1
        executor.worker = self.worker
        c = cfg.comm_args
        self.runtime = TorchDistributedRuntime(
            executor, launch, num_clients=k * p.load,
            backend=choose_backend(c.backend, cfg.device_args.using_gpu),
            round_timeout=c.round_timeout, max_update_norm=c.max_update_norm,
            on_worker_loss=c.on_worker_loss, idle_timeout=max(1800.0, 10 * c.round_timeout),
        )
        self.worker_attack = setup.attack in WORKER_ATTACKS
        self.clients = [client_id(w, j, k) for w in range(k) for j in range(p.load)]

    @property
    def is_server(self) -> bool:
        return self.worker is None

    def serve(self) -> None:
        """Workers: answer the PS's steps until it says stop (or is lost)."""
        self.runtime.serve()

    def close(self) -> None:
        self.runtime.close()

    def gather(
        self, params: Tensor, step: int, adversaries: list[int]
    ) -> tuple[Tensor, Tensor, dict[int, str]]:
        """Broadcast ``params``, collect every worker's file gradients.

        Returns ``(K, l, d)`` rows (NaN where rejected or missing), ``(K, l)`` per-file losses and
        ``{worker: reason}`` for the workers with a rejected frame this step.
        """
        from shieldwall.runtime.base import RoundPlan

        poisoned: frozenset[int] = frozenset()
        if self.worker_attack:
            advs = set(adversaries)
            poisoned = frozenset(c for c in self.clients if c % self.num_workers in advs)
        res = self.runtime.run_clients(params, RoundPlan(step, tuple(self.clients), poisoned))
        k, l = self.num_workers, self.load
        rows = res.updates.reshape(k, l, -1)
        losses = res.losses.reshape(k, l)
        rejected: dict[int, str] = {}
        for c, why in res.rejected.items():
            rejected.setdefault(c % k, why)
        return rows, losses, rejected

    @property
    def bytes(self) -> tuple[int, int]:
        """(bytes sent to workers, bytes received from them) so far."""
        return self.runtime.bytes_down, self.runtime.bytes_up
