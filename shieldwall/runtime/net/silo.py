"""Hierarchical cross-silo: one client is a silo of ``W`` DDP trainers; its rank 0 talks to the
server and uploads the silo's single row.

``W = n_node_in_silo × n_proc_per_node`` processes form a gloo process group at
``pg_master_address:pg_master_port + i`` (``i``: the silo's position in ``client_id_list``, so
silos sharing a host do not collide). Each round silo rank 0 broadcasts a command (run or stop),
the round, the client index, the poisoned flag and the global vector; every process then trains
on its slice of the silo's shard (every ``W``-th sample, from its silo rank) through
:class:`~torch.nn.parallel.DistributedDataParallel`, which averages gradients at every local step
(so all processes keep one model; DDP's ``join`` covers slices with one batch fewer). The silo's
row is the common model delta, its ``num_samples`` the whole shard, its loss the mean over ranks.
The effective batch of a silo is ``W × batch_size``, as in any DDP training.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from shieldwall.algorithms.base import ClientData, LocalResult
from shieldwall.runtime.base import ClientExecutor, RoundPlan

__all__ = ["SiloExecutor", "init_silo_group"]

log = logging.getLogger(__name__)

RUN, STOP = 1, 0


def init_silo_group(address: str, port: int, rank: int, world: int, timeout_s: float) -> None:
    """Join the silo's gloo process group (blocks until all ``world`` processes are in)."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://{address}:{port}", rank=rank, world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )


class SiloExecutor(ClientExecutor):
    """A :class:`ClientExecutor` whose client is trained by the whole silo with DDP.

    Args:
        executor: this process's executor, holding the silo's full shard under ``index``.
        index: the silo's round index (its position in ``client_id_list``).
    """

    def __init__(self, executor: ClientExecutor, index: int) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.source = executor  # a part-selecting executor changes the shard every round
        super().__init__(executor.algorithm, {}, executor.seed, executor.data_attack)
        self.index = index
        shard = self._take_shard(0)
        self.dtype = self.algorithm.flat.vector().dtype
        self.ddp = DistributedDataParallel(self.algorithm.model)
        self.algorithm.model = self.ddp
        log.info("silo client index %d: DDP rank %d of %d (%d of the shard's %d samples)",
                 index, self.rank, self.world, len(self.shards[index]), len(shard))

    def _take_shard(self, round_: int) -> ClientData:
        """This rank's slice (every ``world``-th sample) of the silo's shard for ``round_``."""
        select = getattr(self.source, "shard_for", None)
        shard = select(round_) if select is not None else self.source.shards[self.index]
        part = torch.arange(len(shard), device=shard.y.device)[self.rank :: self.world]
        self.shards = {self.index: ClientData(self.index, shard.x[part], shard.y[part])}
        self.total_samples = len(shard)
        return shard

    def run(self, params: Tensor, plan: RoundPlan, client_id: int) -> LocalResult:
        """Silo rank 0: hand the round to every silo process, then train with them."""
        if self.rank != 0:
            raise RuntimeError("only silo rank 0 receives rounds from the server")
        self._broadcast(RUN, plan.round, client_id, client_id in plan.poisoned_ids, params)
        return self._train(params.to(self.dtype), plan, client_id)

    def stop(self) -> None:
        """Silo rank 0: release the other processes."""
        if self.rank == 0:
            self._broadcast(STOP, 0, 0, False, None)

    def follow(self) -> int:
        """Silo ranks > 0: train each round rank 0 announces, until it says stop."""
        rounds = 0
        while True:
            header = torch.zeros(4, dtype=torch.int64)
            dist.broadcast(header, src=0)
            command, round_, client_id, poisoned = (int(v) for v in header)
            if command == STOP:
                return rounds
            params = torch.empty(self.dim, dtype=self.dtype)
            dist.broadcast(params, src=0)
            plan = RoundPlan(round_, (client_id,), frozenset({client_id} if poisoned else ()))
            self._train(params, plan, client_id)
            rounds += 1

    def _broadcast(
        self, command: int, round_: int, client_id: int, poisoned: bool, params: Tensor | None
    ) -> None:
        header = torch.tensor([command, round_, client_id, int(poisoned)], dtype=torch.int64)
        dist.broadcast(header, src=0)
        if params is not None:
            dist.broadcast(params.detach().to("cpu", self.dtype).contiguous(), src=0)

    def _train(self, params: Tensor, plan: RoundPlan, client_id: int) -> LocalResult:
        if hasattr(self.source, "shard_for"):
            self._take_shard(plan.round)
        with self.ddp.join():
            result = super().run(params, plan, client_id)
        loss = torch.tensor([result.loss], dtype=torch.float64)
        dist.all_reduce(loss)
        return LocalResult(result.update, self.total_samples, float(loss) / self.world)
