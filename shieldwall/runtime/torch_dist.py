"""The multi-process runtime on ``torch.distributed``: rank 0 serves, ranks 1..W-1 host clients.

Launched by torchrun or mpirun (:mod:`.launch`), every rank builds the same components from the
config (data, partition and model are deterministic from the seed); only the global vector, the
round's plan and the update rows travel, as flat contiguous tensors (:mod:`.wire`), never pickled.

Protocol, per round (all point-to-point, each worker rank on its own two-rank process group, so a
dead or silent rank disturbs nobody else's traffic):

1. the server sends every live worker rank a task header (its clients of the round and which are
   poisoned) and, if it has any, the global vector;
2. it posts one receive per client, into a fixed-size NaN-filled frame buffer;
3. the worker runs its clients one after another and sends a frame for each as it finishes;
4. the server waits until ``comm_args.round_timeout`` seconds after the round began; each frame
   is judged by :func:`~shieldwall.runtime.wire.decode_frame` (a bad one becomes that client's
   rejected row, logged). A rank that misses the deadline or whose connection breaks is *lost*:
   its clients are rejected with ``timeout: …`` this round and every later one and nothing is
   sent to it again (``on_worker_loss: continue``), or the run stops with
   :class:`WorkerLostError` (``on_worker_loss: stop``; resume from the last checkpoint).

At the end the server sends a ``STOP`` header to every live rank; all ranks destroy their groups
in :meth:`TorchDistributedRuntime.close`. Client ``c`` lives on rank ``1 + c mod (W - 1)``. With
``W = 1`` the server runs every client itself, as the simulator does.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from shieldwall.config.schema import ExperimentConfig
from shieldwall.runtime import wire
from shieldwall.runtime._faults import WorkerFault, worker_fault
from shieldwall.runtime.base import (
    RUNTIMES,
    ClientExecutor,
    RoundPlan,
    RoundResults,
    Runtime,
    sanitize_row,
)
from shieldwall.runtime.launch import LaunchInfo, choose_backend, detect_launch

__all__ = ["TorchDistributedRuntime", "WorkerLostError", "rank_of_client"]

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
"""Seconds the server spends telling live workers to stop at the end."""


class WorkerLostError(RuntimeError):
    """A worker rank was lost and ``comm_args.on_worker_loss`` is ``stop``."""


def rank_of_client(client_id: int, world_size: int) -> int:
    """The worker rank hosting ``client_id`` (round-robin over ranks 1..W-1)."""
    return 1 + client_id % (world_size - 1)


@RUNTIMES.register("torch_distributed", aliases=("torch", "distributed", "gloo", "nccl", "mpi"))
class TorchDistributedRuntime(Runtime):
    """Server (rank 0) or worker (other ranks) of a torch.distributed run (module docstring).

    Args:
        executor: the algorithm and every client's shard (a worker runs only its own).
        launch: rank, world and rendezvous.
        num_clients: clients in the run.
        backend: ``gloo`` or ``nccl``.
        round_timeout: seconds the server waits for a round's frames.
        max_update_norm: rows with a larger norm are rejected.
        on_worker_loss: ``continue`` or ``stop``.
        idle_timeout: how long a worker waits for the server's next message (and the rendezvous).
    """

    def __init__(
        self, executor: ClientExecutor, launch: LaunchInfo, *, num_clients: int,
        backend: str = "gloo", round_timeout: float = 300.0, max_update_norm: float = 1e12,
        on_worker_loss: str = "continue", idle_timeout: float = 1800.0,
    ) -> None:
        self.executor = executor
        self.launch = launch
        self.rank, self.world = launch.rank, launch.world_size
        self.is_server = launch.rank == 0
        self.num_clients = num_clients
        self.backend = backend
        self.round_timeout = round_timeout
        self.max_update_norm = max_update_norm
        self.stop_on_loss = on_worker_loss.lower() == "stop"
        self.dim = executor.dim
        self.dtype = executor.algorithm.flat.vector().dtype
        self.device = torch.device("cpu")
        if backend == "nccl":
            torch.cuda.set_device(launch.local_rank)
            self.device = torch.device("cuda", launch.local_rank)
        self.slots = max(math.ceil(num_clients / (self.world - 1)), 1) if self.world > 1 else 0
        self.frame_bytes = wire.frame_nbytes(self.dim, self.dtype)
        self.lost: dict[int, str] = {}
        self.bytes_down = self.bytes_up = 0
        self._bufs: dict[tuple[int, int], Tensor] = {}
        self._orphans: list[object] = []  # timed-out works and buffers, kept alive
        self._closed = False
        if not self.is_server and self.my_clients():
            # before the rendezvous: round 0 as fast as the others. One of this rank's own
            # clients (any executor with run(): clients, or the redundancy driver's files)
            c = self.my_clients()[0]
            self.executor.run(self.executor.algorithm.flat.vector(), RoundPlan(-1, (c,)), c)
        timeout = timedelta(seconds=idle_timeout)
        init = "env://" if launch.launcher == "torchrun" else launch.init_method
        dist.init_process_group(
            "gloo", init_method=init, rank=self.rank, world_size=self.world, timeout=timeout
        )
        self.groups: dict[int, dist.ProcessGroup] = {}
        for r in range(1, self.world):  # every rank takes part in creating every group
            group = dist.new_group([0, r], backend=backend, timeout=timeout)
            if self.rank in (0, r):
                self.groups[r] = group
        self.fault: WorkerFault | None = None if self.is_server else worker_fault(self.rank)
        log.info("torch_distributed: rank %d of %d (%s, %s), %d clients, up", self.rank,
                 self.world, launch.launcher, backend, len(self.my_clients()))

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, executor: ClientExecutor) -> Runtime:
        c = cfg.comm_args
        return cls(
            executor, detect_launch(), num_clients=cfg.train_args.client_num_in_total,
            backend=choose_backend(c.backend, cfg.device_args.using_gpu),
            round_timeout=c.round_timeout, max_update_norm=c.max_update_norm,
            on_worker_loss=c.on_worker_loss,
            idle_timeout=max(1800.0, 10 * c.round_timeout),
        )

    def my_clients(self) -> list[int]:
        if self.world == 1:
            return list(range(self.num_clients))
        if self.is_server:
            return []
        return [c for c in range(self.num_clients) if rank_of_client(c, self.world) == self.rank]

    # ---------------------------------------------------------------- server
    def run_clients(self, params: Tensor, plan: RoundPlan) -> RoundResults:
        if not self.is_server:
            raise RuntimeError("run_clients is the server's (rank 0); workers call serve()")
        ids = plan.client_ids
        n, d = len(ids), self.dim
        updates = torch.full((n, d), float("nan"), dtype=params.dtype, device=params.device)
        num_samples = torch.zeros(n, dtype=torch.float64)
        losses = torch.full((n,), float("nan"), dtype=torch.float64)
        res = RoundResults(updates, num_samples, losses, {})
        if self.world == 1:
            self._run_locally(params, plan, res)
            return res

        deadline = time.monotonic() + self.round_timeout
        by_rank: dict[int, list[tuple[int, int]]] = {r: [] for r in self.groups}
        for i, c in enumerate(ids):
            by_rank[rank_of_client(c, self.world)].append((i, c))
        vector = params.detach().to(self.device, self.dtype).contiguous()
        newly_lost: list[int] = []
        judged: set[int] = set()
        posted = {}
        for r, mine in by_rank.items():
            if r in self.lost:
                continue
            try:
                posted[r] = self._post(r, vector, plan, mine)
            except RuntimeError as exc:
                self._lose(r, plan.round, _broken(exc))
                newly_lost.append(r)
        for r, (sends, recvs) in posted.items():
            try:
                for work in sends:
                    self._wait(work, deadline)
                for i, c, buf, work in recvs:
                    self._wait(work, deadline)
                    self._judge(buf, plan.round, i, c, r, res)
                    judged.add(c)
            except (RuntimeError, TimeoutError) as exc:
                self._orphans.append((sends, recvs))
                why = (f"no answer within {self.round_timeout:g} s"
                       if isinstance(exc, TimeoutError) or "Timed out" in str(exc)
                       else _broken(exc))
                self._lose(r, plan.round, why)
                newly_lost.append(r)
        for c in ids:  # the clients of lost ranks that did not answer
            if c not in judged:
                res.rejected[c] = f"timeout: {self.lost[rank_of_client(c, self.world)]}"
        if newly_lost and self.stop_on_loss:
            lost = "; ".join(self.lost[r] for r in newly_lost)
            raise WorkerLostError(
                f"worker {lost}; comm_args.on_worker_loss is 'stop'. "
                "Resume from the last checkpoint with `shieldwall run CONFIG --resume RUN_DIR`."
            )
        return res

    def _post(self, r: int, vector: Tensor, plan: RoundPlan, mine: list[tuple[int, int]]):
        group = self.groups[r]
        ids = [c for _, c in mine]
        header = wire.encode_task(wire.ROUND, plan.round, ids, plan.poisoned_ids, self.dim,
                                  self.slots).to(self.device)
        sends = [dist.isend(header, r, group=group, tag=wire.TAG_TASK)]
        self.bytes_down += header.numel() * 8
        if mine:
            sends.append(dist.isend(vector, r, group=group, tag=wire.TAG_PARAMS))
            self.bytes_down += vector.numel() * vector.element_size()
        recvs = []
        for j, (i, c) in enumerate(mine):
            buf = self._bufs.get((r, j))
            if buf is None:
                buf = torch.empty(self.frame_bytes, dtype=torch.uint8, device=self.device)
                self._bufs[(r, j)] = buf
            wire.prepare_frame(buf, self.dtype)
            tag = wire.frame_tag(plan.round, j, self.slots)
            recvs.append((i, c, buf, dist.irecv(buf, r, group=group, tag=tag)))
        return sends, recvs

    def _wait(self, work: dist.Work, deadline: float) -> None:
        if self.backend == "nccl":  # NCCL's wait() does not block the host: poll instead
            while not work.is_completed():
                if time.monotonic() > deadline:
                    raise TimeoutError
                time.sleep(0.001)
            return
        remaining = max(deadline - time.monotonic(), 0.001)
        work.wait(timeout=timedelta(seconds=remaining))

    def _judge(self, buf: Tensor, round: int, i: int, c: int, r: int, res: RoundResults) -> None:
        """Row ``i`` (client ``c`` of rank ``r``) of ``res`` from its received frame."""
        self.bytes_up += buf.numel()
        got = wire.decode_frame(
            buf, round=round, client_id=c, dim=self.dim, dtype=res.updates.dtype,
            max_norm=self.max_update_norm, max_samples=self._max_samples(c),
        )
        if got.row is None:
            res.rejected[c] = str(got.reason)
            log.warning("round %d: client %d (rank %d) rejected: %s", round, c, r, got.reason)
            return
        res.updates[i] = got.row.to(res.updates.device)
        res.num_samples[i] = got.num_samples
        res.losses[i] = got.loss

    def _max_samples(self, c: int) -> int:
        """The most client ``c`` may claim: its shard's size (:mod:`..claims`)."""
        return len(self.executor.shards[c])

    def _lose(self, r: int, round: int, why: str) -> None:
        self.lost[r] = f"rank {r} lost in round {round}: {why}"
        clients = [c for c in range(self.num_clients) if rank_of_client(c, self.world) == r]
        log.error("round %d: worker rank %d (clients %s) lost: %s; %s", round, r, clients, why,
                  "stopping" if self.stop_on_loss else "its clients count as absent from now on")
        if self.backend == "nccl":  # else NCCL's watchdog kills this process at the timeout
            try:
                dist.distributed_c10d._abort_process_group(self.groups[r])
            except Exception as exc:  # experimental torch API: never fatal here
                log.warning("could not abort rank %d's NCCL group: %s", r, _first_line(exc))

    def _run_locally(self, params: Tensor, plan: RoundPlan, res: RoundResults) -> None:
        """A world of one: the server runs every client itself, as the simulator does."""
        for i, c in enumerate(plan.client_ids):
            result = self.executor.run(params, plan, c)
            row, reason = sanitize_row(result.update, self.dim, params.dtype,
                                       self.max_update_norm)
            if row is None:
                res.rejected[c] = str(reason)
                continue
            res.updates[i] = row
            res.num_samples[i], res.losses[i] = result.num_samples, result.loss

    # ---------------------------------------------------------------- worker
    def serve(self) -> None:
        if self.is_server:
            raise RuntimeError("the server (rank 0) runs rounds; serve() is for worker ranks")
        group = self.groups[self.rank]
        header = torch.empty(wire.task_header_len(self.slots), dtype=torch.int64,
                             device=self.device)
        vector = torch.empty(self.dim, dtype=self.dtype, device=self.device)
        frames = [torch.empty(self.frame_bytes, dtype=torch.uint8, device=self.device)
                  for _ in range(self.slots)]
        compute = self.executor.algorithm.device
        while True:
            try:
                dist.recv(header, 0, group=group, tag=wire.TAG_TASK)
                task = wire.decode_task(header, self.dim, self.slots)
                log.debug("rank %d: round %d task received", self.rank, task.round)
                if task.kind == wire.STOP:
                    log.info("rank %d: the server said stop", self.rank)
                    return
                if self.fault is not None:
                    self.fault.at_round(task.round)
                if task.client_ids:
                    dist.recv(vector, 0, group=group, tag=wire.TAG_PARAMS)
                plan = RoundPlan(task.round, task.client_ids, task.poisoned)
                params = vector.to(compute)
                sends = [self._answer(params, plan, j, c, frames[j], group)
                         for j, c in enumerate(task.client_ids)]
                for work in sends:
                    work.wait()
                log.debug("rank %d: round %d answered", self.rank, task.round)
            except RuntimeError as exc:  # the server went away, or declared this rank lost
                log.error("rank %d: lost the server (%s); leaving", self.rank, _first_line(exc))
                return

    def _answer(self, params, plan, j, c, frame, group) -> dist.Work:
        try:
            result = self.executor.run(params, plan, c)
            update, n, loss = result.update.to(self.device), result.num_samples, result.loss
        except Exception:  # a failing client is that client's problem, not the rank's
            log.exception("rank %d: client %d failed in round %d", self.rank, c, plan.round)
            update, n, loss = None, 0, float("nan")
        if self.fault is not None and update is not None:
            frame = self.fault.frame(frame, plan.round, c, j, self.slots, update, n, loss)
        else:
            wire.encode_frame(frame, plan.round, c, update, n, loss)
        tag = wire.frame_tag(plan.round, j, self.slots)
        return dist.isend(frame, 0, group=group, tag=tag)

    # ---------------------------------------------------------------- shutdown
    def close(self) -> None:
        if self._closed or not dist.is_initialized():
            return
        self._closed = True
        if self.is_server:
            deadline = time.monotonic() + STOP_GRACE_S
            works = []
            for r, group in self.groups.items():
                if r in self.lost:
                    continue
                stop = wire.encode_task(wire.STOP, -1, [], set(), self.dim, self.slots)
                try:
                    works.append((r, dist.isend(stop.to(self.device), r, group=group,
                                                tag=wire.TAG_TASK)))
                except RuntimeError as exc:
                    log.warning("could not tell rank %d to stop: %s", r, _first_line(exc))
            for r, work in works:
                try:
                    self._wait(work, deadline)
                except (RuntimeError, TimeoutError) as exc:
                    log.warning("rank %d did not take the stop: %s", r, _first_line(exc))
        log.debug("rank %d: destroying the process groups", self.rank)
        dist.destroy_process_group()
        log.debug("rank %d: closed", self.rank)


def _broken(exc: BaseException) -> str:
    text = str(exc).lower()
    if "closed" in text or "reset" in text or "broken pipe" in text:
        return "connection closed by the peer"
    return f"connection failed ({_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
