"""One step of a redundant run, in-process or on a cluster, with ByzShield's schedule.

:class:`RedundantSteps` is the ``step(params, t)`` that :func:`shieldwall.train.run_rounds`
calls. Per step it

1. sets the server's learning rate (:func:`~.schedule.lr_at`);
2. gets the voted file gradients: in-process (:func:`~.training.redundant_step`, every file
   computed once and copied to its r replicas) or, on a cluster (:mod:`.cluster`), from the
   workers' frames: the ``(K, l, d)`` rows are gathered into ``(F, r, d)`` replicas, attacks that
   need every honest gradient are applied at the PS, and the PS votes per file
   (``vote``: :func:`~.training._vote`). Files none of whose replicas arrived (lost workers)
   are left out;
3. aggregates the voted files with the configured rule and f, and steps the optimizer;
4. writes a model backup every ``eval_freq`` steps (:class:`~.schedule.Backups`);
5. detects divergence (non-finite loss, aggregate or parameters): the first time it logs an
   error naming the step, and every record from then on carries ``diverged_at``;
   :meth:`finish` adds it to the summary.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from shieldwall.atomic import write_text_atomic
from shieldwall.redundancy.schedule import Backups, diverged, draw_epoch_files, lr_at
from shieldwall.redundancy.setup import RedundantSetup
from shieldwall.seeding import torch_generator

__all__ = ["RedundantSteps", "cluster_step"]

log = logging.getLogger(__name__)


def cluster_step(
    setup: RedundantSetup, rows: Tensor, params: Tensor, *, step: int, seed: int, rtol: float,
    atol: float, attack_at_ps: bool, adversaries: list[int], vote: Any,
    num_classes: int | None = None,
) -> tuple[Tensor, Tensor, int, int, int]:
    """The PS's work on the workers' ``(K, l, d)`` rows.

    Returns the aggregate, the ``(F, d)`` voted gradients, the files won by the adversaries, the
    files without a majority and the files left out (no replica arrived). When the files left
    are too few for the aggregator with ``setup.f`` (e.g. the median with F = 2f + 1), it runs
    with the largest f it accepts on them; with none, the step's aggregate is zero.
    """
    from shieldwall.aggregators import aggregate
    from shieldwall.algorithms.defense import Defense
    from shieldwall.attacks import ATTACKS, AttackContext

    p = setup.placement
    replicas = rows[p.replica_workers, p.replica_slots]  # (F, r, d)
    is_adv = torch.zeros(p.num_workers, dtype=torch.bool)
    is_adv[adversaries] = True
    adv_replica = is_adv[p.replica_workers].to(rows.device)
    arrived = torch.isfinite(replicas).all(dim=2)  # (F, r)
    if attack_at_ps and bool((adv_replica & arrived).any()):
        # the honest value of a file: any replica that arrived (all are honest here)
        have = arrived.any(dim=1)
        first = arrived.float().argmax(dim=1)
        honest = replicas[torch.arange(p.num_files), first][have]
        ctx = AttackContext(
            n=int(have.sum()), f=setup.f, round=step,
            generator=torch_generator(seed, "rd-attack", step), reference=params,
            aggregator=lambda u, f: aggregate(setup.aggregator, u, f).vector,
            num_classes=num_classes,
        )
        bad = torch.full_like(replicas[:, 0], float("nan"))
        bad[have] = ATTACKS.get(setup.attack)(honest, int(have.sum()), ctx, **setup.attack_params)
        use = (adv_replica & arrived).unsqueeze(-1)
        replicas = torch.where(use, bad.unsqueeze(1), replicas)
    voted, won, fallback = vote(replicas, adv_replica & arrived, rtol, atol)
    keep = torch.isfinite(voted).all(dim=1)
    missing = int((~keep).sum())
    if missing == p.num_files:
        return torch.zeros_like(params), voted, won, fallback, missing
    kept = voted if missing == 0 else voted[keep]
    f = setup.f
    if missing:  # lost or rejected replicas (a Byzantine worker's choice) must not crash the PS
        f = Defense(setup.aggregator).largest_f(int(kept.shape[0]), f)
        if f < setup.f:
            log.warning("step %d: %s cannot run on the %d files left with f=%d; %s", step,
                        setup.aggregator, int(kept.shape[0]), setup.f,
                        f"using f={f}, its largest" if f >= 0 else "skipping the step")
        if f < 0:
            return torch.zeros_like(params), voted, won, fallback, missing
    result = aggregate(setup.aggregator, kept, f)
    return result.vector, voted, won, fallback, missing


class RedundantSteps:
    """``step(params, t)`` of a redundant run (module docstring).

    ``kernels`` holds :mod:`.training`'s ``redundant_step``, ``draw_files`` and ``_vote`` (passed
    in, so that this module does not import the driver that imports it).
    """

    def __init__(
        self, cfg: Any, setup: RedundantSetup, algorithm: Any, dataset: Any, per_file: int,
        run_dir: Path, cluster: Any = None, *, kernels: dict[str, Any], resuming: bool = False,
    ) -> None:
        self.kernels = kernels
        self.cfg, self.setup, self.algorithm, self.dataset = cfg, setup, algorithm, dataset
        self.per_file = per_file
        self.cluster = cluster
        ra = cfg.redundancy_args
        self.seed = cfg.common_args.random_seed
        self.lr = cfg.train_args.learning_rate
        device = algorithm.flat.vector().device
        self.train_x, self.train_y = dataset.train_x.to(device), dataset.train_y.to(device)
        self.draw = draw_epoch_files if ra.epochs is not None else kernels["draw_files"]
        self.diverged_at: int | None = None
        self.backups: Backups | None = None
        if ra.eval_freq is not None:
            train_dir = ra.train_dir or str(Path(run_dir) / "backups")
            meta = {
                "dataset": cfg.data_args.dataset, "data_cache_dir": cfg.data_args.data_cache_dir,
                "model": cfg.model_args.model, "eval_freq": int(ra.eval_freq),
                "run_dir": str(run_dir), "approach": ra.approach,
            }
            self.backups = Backups(train_dir, ra.eval_freq, algorithm.model, algorithm.flat.load,
                                   meta, resuming=resuming)
            write_text_atomic(Path(run_dir) / "backups.yaml",
                              yaml.safe_dump({"train_dir": str(self.backups.dir)}))

    def _set_lr(self, step: int) -> float:
        ra = self.cfg.redundancy_args
        lr = lr_at(step, self.lr, ra.gamma, ra.lr_step)
        for group in self.algorithm.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def __call__(self, params: Tensor, step: int) -> tuple[Tensor, dict[str, Any]]:
        ra, setup = self.cfg.redundancy_args, self.setup
        lr = self._set_lr(step)
        record: dict[str, Any] = {"round": step}
        if self.cluster is None:
            x, y = self.draw(self.train_x, self.train_y, setup.placement.num_files,
                             self.per_file, self.seed, step)
            res = self.kernels["redundant_step"](
                setup, self.algorithm.model, self.algorithm.flat, params, x, y, step=step,
                seed=self.seed, rtol=ra.vote_rtol, atol=ra.vote_atol,
                num_classes=self.dataset.num_classes,
            )
            agg, adversaries = res.aggregate, res.adversaries
            won, fallback, loss = res.distorted_files, res.fallback_files, res.train_loss
        else:
            adversaries = setup.adversaries(self.seed, step)
            rows, losses, rejected = self.cluster.gather(params, step, adversaries)
            agg, _, won, fallback, missing = cluster_step(
                setup, rows, params, step=step, seed=self.seed, rtol=ra.vote_rtol,
                atol=ra.vote_atol, attack_at_ps=not self.cluster.worker_attack,
                adversaries=adversaries, vote=self.kernels["vote"],
                num_classes=self.dataset.num_classes,
            )
            honest = [w for w in range(setup.placement.num_workers)
                      if w not in set(adversaries) and w not in rejected]
            finite = losses[honest] if honest else losses
            loss = float(finite[torch.isfinite(finite)].mean()) if bool(
                torch.isfinite(finite).any()) else float("nan")
            if rejected:
                record["rejected_workers"] = {str(w): why for w, why in sorted(rejected.items())}
            if missing:
                record["missing_files"] = missing
                log.warning("step %d: %d of %d files had no replica; aggregated without them",
                            step, missing, setup.placement.num_files)
            down, up = self.cluster.bytes
            record.update(bytes_down=down, bytes_up=up)
        params = self.algorithm.server_step(params, agg, step)
        record.update({
            "train_loss": loss,
            "lr": lr,
            "adversaries": adversaries,
            "distorted_files": won,
            "fallback_files": fallback,
            "num_files": setup.placement.num_files,
            "c_max": setup.c_max,
            "aggregate_norm": float(agg.norm()),
        })
        if self.diverged_at is None and diverged(loss, agg, params):
            self.diverged_at = step
            log.error(
                "the run diverged at step %d (%s): loss %s, aggregate norm %s; the model is "
                "no longer finite (an undefended rule such as maj_vote's mean under attack?)",
                step, setup.approach, loss, float(agg.norm()),
            )
        if self.diverged_at is not None:
            record["diverged_at"] = self.diverged_at
        if self.backups is not None:
            self.backups.after_step(step, params)
        return params, record

    def finish(self, summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        """Add ``diverged_at`` (when it did) to the summary and ``summary.json``."""
        if self.diverged_at is not None:
            summary["diverged_at"] = self.diverged_at
            write_text_atomic(Path(run_dir) / "summary.json", yaml.safe_dump(summary))
        if self.backups is not None:
            summary["train_dir"] = str(self.backups.dir)
        return summary
