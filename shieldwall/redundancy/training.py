"""PS-SGD with redundancy: per-file majority vote, then robust aggregation (DETOX, ByzShield).

Procedure of one step t (Rajput et al. 2019, "DETOX: A redundancy-based framework for faster and
more robust gradient aggregation", NeurIPS; Konstantinidis & Ramamoorthy 2021, "ByzShield: An
efficient and robust system for distributed training", MLSys):

1. the server draws a global batch of F·b samples from the training set with
   ``torch_generator(seed, "rd-batch", t)`` and splits it into F files of b samples
   (b = ``files_batch_size``);
2. every worker k computes the gradient of each file the placement gives it; every file is on r
   workers. Honest computation is deterministic, so the r honest replicas of a file are equal:
   the simulation computes each file's gradient **once** (``torch.func``: ``vmap`` over files of
   ``grad`` with ``functional_call``; a loop over files for models with buffers or dropout) and
   copies it r times;
3. the q adversarial workers (the worst-case set attaining c_max(q), or a fresh random set)
   replace every file gradient they send by the attack's row for that file: the attack is called
   on the F honest file gradients and returns one row per file (``rev_grad``: −100·g_f; ALIE:
   μ − zσ over the honest file gradients, n = F, f = the aggregator's f); colluding adversaries
   holding the same file send the same row;
4. the server votes per file (:mod:`.vote`, by value with ``vote_rtol``/``vote_atol``): a file
   whose majority (≥ r′ = ⌊r/2⌋ + 1 replicas) is adversarial is *distorted*;
5. the configured aggregator (coordinate median, Bulyan, Multi-Krum, …) runs over the F voted
   file gradients with f = c_max(q) (or ``aggregator_f``), and the server's optimizer steps
   (:class:`~shieldwall.algorithms.ps_sgd.PSSGD`'s server half).

The run directory is the one of :func:`shieldwall.train.train` (config.yaml, metrics.jsonl with
the adversaries and distorted-file count of every step, TensorBoard, checkpoint, summary).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldwall.redundancy.setup import RedundantSetup, resolve_setup
from shieldwall.redundancy.vote import vote_replicas
from shieldwall.seeding import derive_seed, torch_generator

__all__ = ["run_redundant", "StepResult", "file_gradients", "redundant_step", "draw_files"]

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """What one redundant step produced."""

    aggregate: Tensor
    voted: Tensor
    honest: Tensor
    adversaries: list[int]
    distorted_files: int
    fallback_files: int
    train_loss: float


def _vmap_ok(model: nn.Module, num_buffers: int) -> bool:
    return num_buffers == 0 and not any(
        isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()
    )


def file_gradients(
    model: nn.Module, flat: Any, params: Tensor, x: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    """``(F, d)`` honest gradient of every file and ``(F,)`` losses at ``params``.

    ``x`` is ``(F, b, …)``, ``y`` is ``(F, b)``. Rows follow the flat layout of
    :class:`~shieldwall.algorithms.flat.FlatModel` (parameters, then the buffer change).
    """
    model.train()
    if _vmap_ok(model, flat.num_buffers):
        from torch.func import functional_call, grad_and_value, vmap

        names = [n for n, p in model.named_parameters() if p.requires_grad]
        pieces, offset = {}, 0
        for name, p in zip(names, flat.params, strict=True):
            pieces[name] = params[offset : offset + p.numel()].view_as(p)
            offset += p.numel()

        def loss_fn(pdict: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
            return F.cross_entropy(functional_call(model, pdict, (xb,)), yb)

        grads, losses = vmap(grad_and_value(loss_fn), in_dims=(None, 0, 0))(pieces, x, y)
        rows = torch.cat([grads[n].reshape(x.shape[0], -1) for n in names], dim=1)
        return rows.detach(), losses.detach()
    rows, losses = [], []
    for xf, yf in zip(x, y, strict=True):
        flat.load(params)
        before = flat.buffer_vector()
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xf), yf)
        loss.backward()
        rows.append(torch.cat([flat.grad_vector(), flat.buffer_vector() - before]).detach())
        losses.append(loss.detach())
    return torch.stack(rows), torch.stack(losses)


def draw_files(
    train_x: Tensor, train_y: Tensor, num_files: int, per_file: int, seed: int, step: int
) -> tuple[Tensor, Tensor]:
    """The step's global batch, split into ``num_files`` files of ``per_file`` samples."""
    n, need = int(train_y.shape[0]), num_files * per_file
    if need > n:
        raise ValueError(
            f"a step needs F·b = {num_files}·{per_file} = {need} samples but the training set "
            f"has {n}; lower redundancy_args.files_batch_size"
        )
    gen = torch_generator(seed, "rd-batch", step)
    idx = torch.randperm(n, generator=gen)[:need].to(train_y.device)
    return (
        train_x[idx].reshape(num_files, per_file, *train_x.shape[1:]),
        train_y[idx].reshape(num_files, per_file),
    )


def _vote(
    replicas: Tensor, adv_replica: Tensor, rtol: float, atol: float
) -> tuple[Tensor, int, int]:
    """Voted ``(F, d)`` gradients, files won by adversaries, files without a majority.

    Files whose r replicas are all finite and equal value by value agree under any tolerance:
    their vote is that value (checked in one pass). :func:`~.vote.vote_replicas` runs on the
    rest only, which saves its r(r − 1)/2 pairwise closeness passes on untouched files.
    """
    first = replicas[:, :1]
    settled = (replicas == first).all(dim=(1, 2)) & torch.isfinite(first).all(dim=(1, 2))
    voted = replicas[:, 0].clone()
    # equal replicas that all came from adversaries are won by them
    won_settled = int((settled & adv_replica.all(dim=1)).sum())
    open_files = torch.nonzero(~settled).flatten()
    if open_files.numel() == 0:
        return voted, won_settled, 0
    voted[open_files], won, fallback = _vote_open(replicas[open_files], adv_replica[open_files],
                                                  rtol, atol)
    return voted, won + won_settled, fallback


def _vote_open(
    replicas: Tensor, adv_replica: Tensor, rtol: float, atol: float
) -> tuple[Tensor, int, int]:
    """:func:`~.vote.vote_replicas` of unsettled files: voted rows, files won by adversaries,
    files without a majority."""
    vote = vote_replicas(replicas, rtol=rtol, atol=atol)
    won = vote.has_majority & adv_replica[torch.arange(len(replicas)), vote.winner.clamp(min=0)]
    return vote.voted, int(won.sum()), vote.num_fallback


def _vote_simulated(
    honest: Tensor, bad: Tensor | None, adv_replica: Tensor, rtol: float, atol: float
) -> tuple[Tensor, int, int]:
    """:func:`_vote` of the replicas a simulated step holds, without building all of them.

    Every honest replica of file f is ``honest[f]`` (one computation) and every adversarial one
    ``bad[f]``: a file is settled in one comparison of two rows, and the ``(F, r, d)`` replicas
    are built only for the files whose values differ (or are not finite) and voted. Same result
    as ``_vote`` on the full replicas, without its ``F·r·d`` copy and second settling pass.
    """
    finite = torch.isfinite(honest).all(dim=1)
    voted = honest.clone()
    if bad is None:
        settled = finite
    else:
        has_adv = adv_replica.any(dim=1)
        same = torch.ones_like(finite)
        if bool(has_adv.any()):
            same[has_adv] = (bad[has_adv] == honest[has_adv]).all(dim=1)
        settled = finite & same
    won_settled = int((settled & adv_replica.all(dim=1)).sum())
    open_files = torch.nonzero(~settled).flatten()
    if open_files.numel() == 0:
        return voted, won_settled, 0
    r = adv_replica.shape[1]
    rows = honest[open_files].unsqueeze(1).expand(-1, r, -1)
    if bad is not None:
        rows = torch.where(adv_replica[open_files].unsqueeze(-1), bad[open_files].unsqueeze(1),
                           rows)
    voted[open_files], won, fallback = _vote_open(rows, adv_replica[open_files], rtol, atol)
    return voted, won + won_settled, fallback


def redundant_step(
    setup: RedundantSetup,
    model: nn.Module,
    flat: Any,
    params: Tensor,
    x: Tensor,
    y: Tensor,
    *,
    step: int,
    seed: int,
    rtol: float,
    atol: float,
    num_classes: int | None = None,
) -> StepResult:
    """Steps 2–5 of the module docstring (without the optimizer step)."""
    from shieldwall.aggregators import aggregate
    from shieldwall.attacks import ATTACKS, AttackContext

    placement = setup.placement
    honest, losses = file_gradients(model, flat, params, x, y)
    nf = placement.num_files
    adversaries = setup.adversaries(seed, step)
    workers = placement.replica_workers  # (F, r)
    is_adv = torch.zeros(placement.num_workers, dtype=torch.bool)
    is_adv[adversaries] = True
    adv_replica = is_adv[workers].to(honest.device)  # (F, r)
    bad = None
    if bool(adv_replica.any()):
        ctx = AttackContext(
            n=nf,
            f=setup.f,
            round=step,
            generator=torch_generator(seed, "rd-attack", step),
            reference=params,
            aggregator=lambda u, f: aggregate(setup.aggregator, u, f).vector,
            num_classes=num_classes,
        )
        bad = ATTACKS.get(setup.attack)(honest, nf, ctx, **setup.attack_params)
    voted, won, fallback = _vote_simulated(honest, bad, adv_replica, rtol, atol)
    result = aggregate(setup.aggregator, voted, setup.f)
    return StepResult(
        aggregate=result.vector,
        voted=voted,
        honest=honest,
        adversaries=adversaries,
        distorted_files=won,
        fallback_files=fallback,
        train_loss=float(losses.mean()),
    )


def run_redundant(cfg: Any, resume: str | Path | None = None) -> dict[str, Any]:
    """Run ``cfg`` (with ``redundancy_args.enable``) to its last step; returns the summary."""
    from shieldwall.algorithms.ps_sgd import PSSGD
    from shieldwall.config import ConfigError
    from shieldwall.data import load_dataset
    from shieldwall.models import MODELS, build_model
    from shieldwall.registry import UnknownNameError
    from shieldwall.rundir import device_for as _device
    from shieldwall.rundir import open_run, run_rounds

    t, ra = cfg.train_args, cfg.redundancy_args
    seed = cfg.common_args.random_seed
    device = _device(cfg)
    try:
        dataset = load_dataset(cfg.data_args.dataset, cfg.data_args.data_cache_dir,
                               cfg.text_args)
        MODELS.entry(cfg.model_args.model)
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from None
    setup = resolve_setup(ra, t.client_num_in_total)
    per_file = int(ra.files_batch_size or t.batch_size)
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_model(cfg.model_args.model, dataset.input_shape, dataset.num_classes,
                        cfg.text_args, text=dataset.train_y.dim() > 1)
    algorithm = PSSGD(t, model, device)
    from shieldwall.redundancy.cluster import FileExecutor, RedundancyCluster, launched
    from shieldwall.redundancy.driver import RedundantSteps
    from shieldwall.redundancy.schedule import steps_per_epoch, total_steps

    if ra.epochs is not None:  # ByzShield's --epochs: the run ends after that many passes
        per_epoch = steps_per_epoch(len(dataset.train_y), setup.placement.num_files, per_file)
        t.comm_round = total_steps(t.comm_round, ra.epochs, per_epoch)
    cluster = None
    if launched(cfg):  # rank 0 is the PS, ranks 1..K the workers (redundancy/cluster.py)
        executor = FileExecutor(
            algorithm, setup, None, dataset.train_x.to(device), dataset.train_y.to(device),
            per_file, seed, epochs=ra.epochs is not None, num_classes=dataset.num_classes,
            file_gradients=file_gradients,
        )
        cluster = RedundancyCluster(cfg, setup, executor)
        if not cluster.is_server:
            try:
                cluster.serve()
            finally:
                cluster.close()
            return {}
    try:
        run_dir, params, start = open_run(cfg, resume, algorithm.flat.vector(), algorithm)
        log.info(
            "redundant run %s: %s, q=%d (%s, c_max=%d), attack %s, aggregator %s (f=%d), b=%d, "
            "%s", run_dir, setup.placement.summary(), setup.q, setup.adversary_choice,
            setup.c_max, setup.attack, setup.aggregator, setup.f, per_file,
            f"{setup.placement.num_workers} worker processes" if cluster else "in-process",
        )
        kernels = {"redundant_step": redundant_step, "draw_files": draw_files, "vote": _vote}
        steps = RedundantSteps(cfg, setup, algorithm, dataset, per_file, run_dir, cluster,
                               kernels=kernels, resuming=resume is not None)
        summary = run_rounds(cfg, run_dir, params, start, steps, algorithm, dataset)
        return steps.finish(summary, run_dir)
    finally:
        if cluster is not None:
            cluster.close()
