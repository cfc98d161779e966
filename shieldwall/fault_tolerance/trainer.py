r"""The training loop of ``shieldwall ddp``: data-parallel SGD with redundant checks.

Step :math:`t` takes global batch :math:`t \bmod T_e` of a seeded per-epoch permutation
(:math:`T_e = \lfloor N / B \rfloor` steps per epoch), splits it into :math:`w` equal sub-batches,
lets a *cluster* compute every assignment of the step's :class:`~.schedule.StepPlan` (faults
included), turns the rows into one gradient with :class:`~.engine.FaultTolerantStep` and applies

.. math::
    v \leftarrow \mu v + \hat g_t, \qquad \theta \leftarrow \theta - \eta v .

The cluster is :class:`LocalCluster` (all workers in this process, one batched computation) or
:class:`shieldwall.fault_tolerance.distributed.GlooCluster` (workers spread over processes); the
loop, and therefore the result, is the same.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shieldwall.algorithms.base import evaluate
from shieldwall.algorithms.flat import FlatModel
from shieldwall.data import load_dataset
from shieldwall.devices import select_device
from shieldwall.fault_tolerance.config import DDPConfig
from shieldwall.fault_tolerance.engine import SOURCES, FaultTolerantStep
from shieldwall.fault_tolerance.faults import FaultInjector
from shieldwall.fault_tolerance.gradients import SubBatchGradients
from shieldwall.fault_tolerance.resume import load_checkpoint, save_checkpoint, write_config
from shieldwall.fault_tolerance.schedule import RedundancySchedule, StepPlan
from shieldwall.metrics.logger import keep_rounds_before
from shieldwall.models import build_model
from shieldwall.rundir.directory import claim_run_dir, fresh_log_dir, release_run_dir
from shieldwall.seeding import derive_seed, torch_generator

__all__ = ["LocalCluster", "RunLog", "Setup", "build_setup", "train_ddp", "select_device"]

log = logging.getLogger(__name__)


class LocalCluster:
    """Every worker in this process: one batched gradient computation per step."""

    def __init__(
        self, grads: SubBatchGradients, injector: FaultInjector, x: Tensor, y: Tensor
    ) -> None:
        self.grads, self.injector, self.x, self.y = grads, injector, x, y

    def compute_rows(self, plan: StepPlan, params: Tensor, idx: Tensor, rows: list[int]) -> Any:
        """Rows ``rows`` of ``plan`` (indices into its assignments): ``(grads, losses)``."""
        assign = [plan.assignments[k] for k in rows]
        batches = [a.batch for a in assign]
        sel = idx[batches]
        g, losses = self.grads(
            params, self.x[sel], self.y[sel], step=plan.step, batch_ids=batches
        )
        g = self.injector.apply(g, [a.worker for a in assign], batches, plan.step,
                                reference=params)
        return g, losses

    def compute(self, plan: StepPlan, params: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """All of ``plan``'s rows in assignment order, and their losses."""
        return self.compute_rows(plan, params, idx, list(range(len(plan.assignments))))


class RunLog:
    """``metrics.jsonl`` and TensorBoard scalars under ``run_dir`` (nothing when ``None``).

    A new run never goes over an earlier one (a directory holding one gives way to DIR-2,
    DIR-3…); a resumed one (``start_step``) takes its own directory back and keeps the records
    before ``start_step``."""

    def __init__(self, run_dir: str | Path | None, start_step: int | None = None) -> None:
        self._file = self._writer = None
        self.run_dir: Path | None = None
        if run_dir is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        if start_step is None:
            self.run_dir = fresh_log_dir(run_dir)
            self._file = (self.run_dir / "metrics.jsonl").open("x")
            self._writer = SummaryWriter(str(self.run_dir))
            return
        self.run_dir = claim_run_dir(run_dir)  # one writer: a live run stops this one
        keep_rounds_before(self.run_dir / "metrics.jsonl", start_step)
        self._file = (self.run_dir / "metrics.jsonl").open("a")
        self._writer = SummaryWriter(str(self.run_dir), purge_step=start_step)

    def log(self, step: int, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        self._file.write(json.dumps({"round": step, **clean}) + "\n")
        for key, value in record.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)

    def flush(self) -> None:
        """Every record so far on disk (before a checkpoint names a later step)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._writer.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._writer.close()
            release_run_dir(self.run_dir)


class Setup:
    """Everything a run builds from its config (shared by the simulator and every process)."""

    def __init__(self, cfg: DDPConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        data = load_dataset(cfg.dataset, cfg.data_dir)
        self.train_x, self.train_y = data.train_x.to(device), data.train_y.to(device)
        self.test_x, self.test_y = data.test_x.to(device), data.test_y.to(device)
        torch.manual_seed(derive_seed(cfg.seed, "ft-init"))
        self.model = build_model(cfg.arch, data.input_shape, data.num_classes).to(device)
        self.flat = FlatModel(self.model)
        self.grads = SubBatchGradients(self.model, cfg.seed)
        self.injector = FaultInjector(
            cfg.fault, cfg.faulty, cfg.workers, seed=cfg.seed,
            sigma=cfg.fault_sigma, scale=cfg.fault_scale, params=cfg.fault_params,
        )
        self.schedule = RedundancySchedule(cfg.workers, cfg.check_every, cfg.seed)
        self.sub_batch = cfg.global_batch_size // cfg.workers
        n = int(self.train_y.shape[0])
        self.steps_per_epoch = n // cfg.global_batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"global_batch_size {cfg.global_batch_size} exceeds the {n} samples")
        total = cfg.epoch * self.steps_per_epoch
        self.total_steps = total if cfg.max_steps is None else min(total, cfg.max_steps)
        self._perm: tuple[int, Tensor] | None = None

    def batch_indices(self, step: int) -> Tensor:
        """``(w, B/w)`` sample indices of step ``step``'s sub-batches."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            gen = torch_generator(self.cfg.seed, "ft-epoch", epoch)
            self._perm = (epoch, torch.randperm(int(self.train_y.shape[0]), generator=gen))
        b = self.cfg.global_batch_size
        idx = self._perm[1][pos * b : (pos + 1) * b]
        return idx.view(self.cfg.workers, self.sub_batch).to(self.device)

    def evaluate(self, params: Tensor) -> tuple[float, float]:
        self.flat.load(params)
        return evaluate(self.model, self.test_x, self.test_y)


def build_setup(cfg: DDPConfig, device: torch.device | None = None) -> Setup:
    return Setup(cfg, device if device is not None else select_device(cfg.device))


def train_ddp(
    cfg: DDPConfig,
    *,
    setup: Setup | None = None,
    cluster: Any = None,
    lead: bool = True,
    console: Any = None,
    resume: bool = False,
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``cfg``; returns the summary (final accuracy, convictions, overhead, errors…).

    Args:
        setup: reuse a built :class:`Setup` (default: build one).
        cluster: where rows are computed (default: a :class:`LocalCluster`).
        lead: this process evaluates and logs (rank 0 in multi-process runs).
        console: a :class:`~.console.SeedConsole` printing the simulator's per-step lines.
        resume: continue the run in ``cfg.tb`` from its checkpoint (:mod:`.resume`).
        state: that checkpoint, already read (multi-process runs: rank 0 reads, all restore).
    """
    setup = setup or build_setup(cfg)
    if cfg.correct and not cfg.check_every:
        log.warning("--correct has no effect without redundant checks (--check-every 0)")
    cluster = cluster or LocalCluster(setup.grads, setup.injector, setup.train_x, setup.train_y)
    engine = FaultTolerantStep(
        cfg.workers, cfg.bound, correct=cfg.correct, defense=cfg.defense, rtol=cfg.tolerance,
        prior_strength=cfg.prior_strength, decay=cfg.decay, defense_params=cfg.defense_params,
    )
    params = setup.flat.vector().to(setup.device)
    velocity = torch.zeros_like(params)
    totals = dict.fromkeys(SOURCES, 0)
    timing = {"compute": 0.0, "engine": 0.0}
    evals: list[dict[str, float]] = []
    first, elapsed = 0, 0.0
    if resume:
        if cfg.tb is None:
            raise ValueError("resuming needs the run directory (tb)")
        state = state if state is not None else load_checkpoint(cfg.tb, params.numel())
        first, elapsed = int(state["step"]), float(state["elapsed"])
        if first > setup.total_steps:
            raise ValueError(f"the checkpoint in {cfg.tb} is at step {first}, past this run's "
                             f"last step {setup.total_steps} (--max-steps / -e): a run cannot "
                             "be shortened to before its checkpoint")
        params.copy_(state["params"])
        velocity.copy_(state["velocity"])
        engine.load_state_dict(state["engine"], setup.device)
        totals.update({k: int(v) for k, v in state["totals"].items() if k in totals})
        timing.update({k: float(v) for k, v in state["timing"].items() if k in timing})
        evals = [dict(e) for e in state["evals"]]
        log.info("resuming %s at step %d of %d", cfg.tb, first, setup.total_steps)
    collector = None
    if lead and cfg.data_coll_path is not None:
        from shieldwall.fault_tolerance.datacoll import DataCollector

        collector = (DataCollector.reopen(cfg.data_coll_path, params.numel(), first) if resume
                     else DataCollector(cfg.data_coll_path, params.numel(), cfg.to_dict()))
    runlog = RunLog(cfg.tb if lead else None, start_step=first if resume else None)
    if runlog.run_dir is not None and not resume:
        write_config(runlog.run_dir, dataclasses.replace(cfg, tb=str(runlog.run_dir)))
    eval_every = cfg.eval_every or setup.steps_per_epoch
    start = time.perf_counter()

    def checkpoint(next_step: int) -> None:
        runlog.flush()  # a kill after the checkpoint must not lose the records before it
        save_checkpoint(runlog.run_dir, step=next_step, params=params.cpu(),
                        velocity=velocity.cpu(), engine=engine.state_dict(), totals=totals,
                        timing=timing, evals=evals,
                        elapsed=elapsed + time.perf_counter() - start)

    try:
        for step in range(first, setup.total_steps):
            plan = setup.schedule.plan(step)
            log.debug("%s", plan.format())
            t0 = time.perf_counter()
            rows, losses = cluster.compute(plan, params, setup.batch_indices(step))
            t1 = time.perf_counter()
            out = engine(plan, rows)
            t2 = time.perf_counter()
            timing["compute"] += t1 - t0
            timing["engine"] += t2 - t1
            velocity.mul_(cfg.momentum).add_(out.aggregate)
            params.sub_(cfg.lr * velocity)
            counts = out.counts()
            for key, value in counts.items():
                totals[key] += value
            train_loss = float(losses[: cfg.workers].mean())
            if collector is not None:
                collector.write(step, out.pairs)
            record: dict[str, Any] = {
                "train_loss": train_loss,
                "defense/rows": out.num_rows,
                "defense/f": out.f,
                "defense/f_used": out.f_rule,
                "fault/convicted": len(engine.convicted),
                "fault/disagreements": out.disagreements,
                "compute/extra_fraction": setup.schedule.overhead(step + 1)["extra"],
                **{f"rows/{k}": v for k, v in counts.items()},
            }
            if engine.bank is not None and out.learned:
                for k, v in engine.bank.summary(last=out.learned).items():
                    record[f"correction/{k}"] = v
            epoch, position = divmod(step, setup.steps_per_epoch)
            if console is not None:
                console.step(plan, out, engine.bank, epoch=epoch, num_epochs=cfg.epoch,
                             position=position, steps_per_epoch=setup.steps_per_epoch,
                             loss=train_loss, engine=engine)
            if lead and ((step + 1) % eval_every == 0 or step + 1 == setup.total_steps):
                loss, acc = setup.evaluate(params)
                record.update({"test_loss": loss, "test_accuracy": acc})
                evals.append({"step": step + 1, "test_loss": loss, "test_accuracy": acc})
                log.info("step %d/%d: test accuracy %.4f, loss %.4f, convicted %s",
                         step + 1, setup.total_steps, acc, loss, sorted(engine.convicted))
                if console is not None:
                    console.validation(acc)
            if console is not None and (
                position + 1 == setup.steps_per_epoch or step + 1 == setup.total_steps
            ):
                console.epoch_done(epoch)
            runlog.log(step, record)
            if runlog.run_dir is not None and (
                step + 1 == setup.total_steps
                or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0)
            ):
                checkpoint(step + 1)
    finally:
        runlog.close()
    wall = elapsed + time.perf_counter() - start
    summary = _summary(cfg, setup, engine, params, evals, totals, timing, wall)
    summary["run_dir"] = None if runlog.run_dir is None else str(runlog.run_dir)
    if collector is not None:
        summary["data_coll"] = {"path": str(collector.path), "shards": len(collector.shards),
                                "pairs": collector.num_pairs}
    return summary


def _summary(
    cfg: DDPConfig,
    setup: Setup,
    engine: FaultTolerantStep,
    params: Tensor,
    evals: list[dict[str, float]],
    totals: dict[str, int],
    timing: dict[str, float],
    wall: float,
) -> dict[str, Any]:
    steps = setup.total_steps
    convicted = dict(sorted(engine.convicted.items()))
    checks = {w: s // cfg.check_every + 1 for w, s in convicted.items()} if cfg.check_every else {}
    final = evals[-1] if evals else {}
    return {
        "final_test_accuracy": final.get("test_accuracy"),
        "final_test_loss": final.get("test_loss"),
        "steps": steps,
        "convicted": convicted,
        "detection_check_steps": checks,
        "false_convictions": sorted(set(convicted) - set(cfg.faulty)),
        "missed": sorted(set(cfg.faulty) - set(convicted)) if cfg.check_every else cfg.faulty,
        "overhead": setup.schedule.overhead(steps),
        "rows": totals,
        "correction": engine.bank.summary() if engine.bank is not None else {},
        "correction_last": engine.bank.summary(last=20) if engine.bank is not None else {},
        "correction_fallbacks": engine.bank.fallbacks if engine.bank is not None else 0,
        "correction_clipped": engine.bank.clipped if engine.bank is not None else 0,
        "nonfinite_steps": engine.nonfinite_steps,
        "defense": engine.rule.aggregator,
        "f_lowered_steps": engine.f_lowered,
        "evals": evals,
        "wall_s": wall,
        "compute_s_per_step": timing["compute"] / max(steps, 1),
        "engine_s_per_step": timing["engine"] / max(steps, 1),
        "params": params,
    }
