r"""``shieldwall ddp`` over torch.distributed (gloo): ``--proc N`` processes or torchrun.

Protocol (replicated state machine, no parameter server). Logical worker :math:`i` lives on rank
:math:`i \bmod N`. Every rank holds the data set, the same initial model and the same seeded
schedule, so at step :math:`t` every rank knows the plan without talking. Then

1. each rank computes the gradients of *its* assignments (one batched computation; a faulty
   worker's fault is injected on its own rank, from the same per-``(step, worker, batch)`` seed
   as in the simulator);
2. one ``all_gather`` of a ``(k_max, d + 1)`` float tensor per rank (the rows plus each row's
   loss, padded to the largest rank's count) gives every rank every row;
3. every rank runs the same deterministic detection, correction and aggregation
   (:class:`~.engine.FaultTolerantStep`) and the same SGD update.

Plain DDP would ``all_reduce`` one ``d``-vector; comparing replicas needs the rows themselves, so
the traffic is that of an all-gather (what robust aggregation needs anyway). Ranks never diverge:
the run ends by checking that every rank's parameters equal rank 0's (``max_param_divergence``).
Rank 0 evaluates, logs and reports. Omniscient faults (ALIE, IPM…) need every honest row before
the faulty ones exist and are refused here (use the simulator).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from shieldwall.checkpoint import load_tensors
from shieldwall.fault_tolerance.config import DDPConfig
from shieldwall.fault_tolerance.faults import FaultInjector
from shieldwall.fault_tolerance.resume import load_checkpoint
from shieldwall.fault_tolerance.schedule import StepPlan
from shieldwall.fault_tolerance.trainer import (
    LocalCluster,
    build_setup,
    select_device,
    train_ddp,
)

__all__ = ["GlooCluster", "run_distributed", "under_launcher"]

log = logging.getLogger(__name__)


class GlooCluster(LocalCluster):
    """Computes this rank's workers' rows and all-gathers everyone's (module docstring)."""

    def __init__(self, grads: Any, injector: Any, x: Tensor, y: Tensor, rank: int, world: int):
        super().__init__(grads, injector, x, y)
        self.rank, self.world = rank, world

    def compute(self, plan: StepPlan, params: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        owner = [a.worker % self.world for a in plan.assignments]
        per_rank = [[k for k, r in enumerate(owner) if r == rank] for rank in range(self.world)]
        kmax = max(len(p) for p in per_rank)
        mine = per_rank[self.rank]
        d = params.numel()
        buf = torch.zeros(kmax, d + 1, dtype=params.dtype)
        if mine:
            g, losses = self.compute_rows(plan, params, idx, mine)
            buf[: len(mine), :d] = g.cpu()
            buf[: len(mine), d] = losses.cpu().to(params.dtype)
        gathered = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(gathered, buf)
        rows = torch.empty(len(owner), d + 1, dtype=params.dtype)
        for rank, ks in enumerate(per_rank):
            if ks:
                rows[ks] = gathered[rank][: len(ks)]
        rows = rows.to(params.device)
        return rows[:, :d], rows[:, d]


def under_launcher() -> bool:
    """Whether torchrun (or another env:// launcher) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int, world: int, cfg: DDPConfig, out: str | None, level: int, echo: bool = False,
    resume: bool = False,
) -> dict | None:
    torch.set_num_threads(1)
    if not logging.getLogger().handlers:
        fmt = f"%(levelname)s [rank {rank}] %(name)s: %(message)s"
        logging.basicConfig(level=level, format=fmt)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300)
    )
    try:
        device = torch.device("cpu") if cfg.device == "auto" else select_device(cfg.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", rank % max(torch.cuda.device_count(), 1))
        setup = build_setup(cfg, device)
        cluster = GlooCluster(
            setup.grads, setup.injector, setup.train_x, setup.train_y, rank, world
        )
        console = None
        if echo and rank == 0:
            from shieldwall.fault_tolerance.console import SeedConsole

            console = SeedConsole()
        state = None
        if resume:  # rank 0 reads the checkpoint (its run directory), every rank restores it
            box = [load_checkpoint(cfg.tb, setup.flat.vector().numel()) if rank == 0 else None]
            dist.broadcast_object_list(box, src=0)
            state = box[0]
        summary = train_ddp(cfg, setup=setup, cluster=cluster, lead=rank == 0, console=console,
                            resume=resume, state=state)
        params = summary["params"].cpu()
        reference = params.clone()
        dist.broadcast(reference, src=0)
        divergence = (params - reference).abs().max().reshape(1)
        dist.all_reduce(divergence, op=dist.ReduceOp.MAX)
        summary["max_param_divergence"] = float(divergence)
        summary["world_size"] = world
        summary["params"] = params
        if rank == 0 and out is not None:
            torch.save(summary, out)
        dist.barrier()  # no rank tears down while another is still in a collective
        return summary if rank == 0 else None
    finally:
        dist.destroy_process_group()


def _spawned(rank: int, world: int, cfg: DDPConfig, out: str, level: int, echo: bool,
             resume: bool) -> None:
    try:
        _worker(rank, world, cfg, out, level, echo, resume)
    except (ValueError, FileNotFoundError) as exc:  # the user's to fix: one line, in the parent
        Path(f"{out}.rank{rank}.error").write_text(str(exc))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
    # A finished rank leaves without the interpreter's teardown: gloo's threads, destroyed
    # during it, occasionally aborted the process ("terminate called without an active
    # exception") after all work was done. Errors above still reach mp.spawn as exceptions.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_distributed(cfg: DDPConfig, *, echo: bool = False,
                    resume: bool = False) -> dict[str, Any] | None:
    """Run ``cfg`` over gloo: in this process under torchrun (returns the summary on rank 0,
    ``None`` elsewhere), else by spawning ``cfg.proc`` processes on 127.0.0.1. ``echo``: rank 0
    prints the simulator's per-step lines (:mod:`.console`); ``resume``: continue the run in
    ``cfg.tb`` (:mod:`.resume`)."""
    if cfg.proc < 1 and not under_launcher():
        raise ValueError("run_distributed needs proc >= 1 or a torchrun launch")
    # checked here, before any process starts
    injector = FaultInjector(cfg.fault, cfg.faulty, cfg.workers, sigma=cfg.fault_sigma,
                             scale=cfg.fault_scale, params=cfg.fault_params)
    if injector.omniscient or injector.pooled:
        raise ValueError(
            f"fault {cfg.fault!r} needs several workers' true rows at once: simulator only, "
            "drop --proc"
        )
    level = logging.getLogger().getEffectiveLevel()
    if under_launcher():
        world = int(os.environ["WORLD_SIZE"])
        return _worker(int(os.environ["RANK"]), world, cfg, None, level, echo, resume)
    import torch.multiprocessing as mp

    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(_free_port())
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "summary.pt")
        try:
            mp.spawn(_spawned, args=(cfg.proc, cfg, out, level, echo, resume), nprocs=cfg.proc,
                     join=True)
        except mp.ProcessExitedException:
            said = sorted(Path(tmp).glob("summary.pt.rank*.error"))
            if said:  # a bad setting or file every rank met: its message, not a traceback
                raise ValueError(said[0].read_text()) from None
            raise
        return load_tensors(out)  # rank 0's summary: tensors and plain data
