"""Mimic (Karimireddy, He & Jaggi 2022, "Byzantine-robust learning on heterogeneous datasets via
bucketing", ICLR).

Every Byzantine worker sends a copy of one chosen honest worker's update,
:math:`b_j = x_{i^\\star}`. Nothing is out of distribution, yet under data heterogeneity the
aggregate over-represents worker :math:`i^\\star`'s data and drifts away from the average
objective.

Choice of :math:`i^\\star` (param ``target``):

* an ``int``: that row of ``honest`` (Python-style negative indices allowed);
* ``None`` (default): the paper's heuristic, restricted to the current round. The paper picks the
  worker most extreme along the direction of maximal variance of the honest updates,
  :math:`z = \\arg\\max_{\\lVert z \\rVert = 1} \\sum_i \\langle z, x_i - \\mu \\rangle^2`,
  learnt by power iteration over a warm-up phase, then keeps that worker fixed. A pure function has
  no memory across rounds, so here z is the top principal direction of *this round's* centred
  updates and :math:`i^\\star = \\arg\\max_i |\\langle z, x_i - \\mu \\rangle|` (absolute value,
  since an eigenvector's sign is arbitrary); ties go to the lowest index. Pass an ``int`` to keep
  one worker for the whole run;
* ``"random"``: a uniformly random honest row drawn from ``ctx.generator``.

``warmup=k`` (an int, the paper's code: ``MimicVariantAttacker``, ``--mimic-warmup`` default 1)
replaces the per-round choice with the paper's stateful one, kept in ``ctx.state``: on the first
round :math:`\\mu` is the honest mean and, from a standard normal :math:`z_0` (seed 0),
:math:`z \\propto \\sum_i \\langle x_i - \\mu, z_0 \\rangle (x_i - \\mu)` (one power-iteration
step); for rounds :math:`1 \\le t < k` the running mean and z are updated,
:math:`\\mu \\leftarrow \\tfrac{t}{t+1}\\mu + \\tfrac{1}{t+1}\\bar x` and
:math:`z \\leftarrow \\tfrac{t}{t+1} z + \\tfrac{1}{t+1} c / \\lVert c \\rVert` with
:math:`c = \\sum_i \\langle x_i - \\mu, z \\rangle (x_i - \\mu)`, renormalised. While
:math:`t < k` the target is :math:`\\arg\\max_i \\langle x_i, z \\rangle` (uncentred, signed, first
maximum); afterwards it stays fixed. Needs a caller that keeps ``ctx.state`` (the adversary does;
it is not checkpointed, so a resumed run re-learns it from its first round after the resume).

Needs every honest update of the round (``omniscient=True``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._utils import check_honest, repeat_row, require_generator
from shieldwall.attacks.base import AttackContext

__all__ = ["mimic", "mimic_target"]


def mimic_target(honest: Tensor) -> int:
    """The row most extreme along the top principal direction of the centred rows.

    The projections of the centred rows on the top right singular vector are σ₁·u₁ (u₁ the top
    left singular vector), so the target is ``argmax |u₁|``, found from the small ``h × h`` Gram
    matrix (float64, deterministic).
    """
    if honest.shape[0] == 1:
        return 0
    centred = (honest - honest.mean(dim=0)).to(torch.float64)
    gram = centred @ centred.T
    if not bool(gram.abs().max() > 0):
        return 0
    _, vectors = torch.linalg.eigh(gram)  # ascending eigenvalues
    scores = vectors[:, -1].abs()
    return int(torch.argmax(scores).item())


def _paper_target(honest: Tensor, memory: dict, warmup: int) -> int:
    """The bucketing paper's ``MimicVariantAttacker`` target (state in ``memory``)."""
    t = memory.get("t", 0)
    x = honest.to(torch.float64)
    avg = x.mean(dim=0)
    if t < warmup:
        if t == 0:
            mu = avg
            gen = torch.Generator().manual_seed(0)
            z = torch.randn(x.shape[1], generator=gen, dtype=torch.float64).to(x.device)
            centred = x - mu
            cumu = (centred @ z) @ centred
            z = cumu / cumu.norm()
        else:
            old_mu, old_z = memory["mu"].to(x), memory["z"].to(x)  # from a checkpoint: on CPU
            mu = t / (1 + t) * old_mu + avg / (1 + t)
            centred = x - mu
            cumu = (centred @ old_z) @ centred
            z = t / (1 + t) * old_z + cumu / cumu.norm() / (1 + t)
            z = z / z.norm()
        memory["mu"], memory["z"] = mu, z
        memory["target"] = int(torch.argmax(x @ z).item())
    memory["t"] = t + 1
    return min(memory["target"], honest.shape[0] - 1)


@ATTACKS.register("mimic", aliases=("mimic_attack",), kind="update", omniscient=True)
def mimic(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    target: int | str | None = None,
    warmup: int | None = None,
) -> Tensor:
    """Every Byzantine row copies honest row ``target``.

    Args:
        honest: ``(h, d)`` honest updates of the round.
        num_byzantine: rows to return.
        ctx: ``ctx.generator`` is needed only for ``target="random"``.
        target: row index, ``None`` (principal-direction heuristic, see the module docstring) or
            ``"random"``.
        warmup: the paper's stateful choice over this many rounds (see the module docstring);
            ``None`` (default): the per-round choice of ``target``.
    """
    check_honest(honest, num_byzantine, "mimic")
    h = honest.shape[0]
    if warmup is not None:
        if isinstance(warmup, bool) or int(warmup) != warmup or warmup < 1:
            raise ValueError(f"mimic: warmup must be an integer >= 1, got {warmup!r}")
        if ctx.state is None:
            raise ValueError("mimic: warmup needs a caller that keeps ctx.state")
        index = _paper_target(honest, ctx.state.setdefault("mimic", {}), int(warmup))
        return repeat_row(honest[index], num_byzantine)
    if target is None:
        index = mimic_target(honest)
    elif isinstance(target, str):
        if target.strip().lower() != "random":
            raise ValueError(f"mimic: target must be an int, None or 'random', got {target!r}")
        gen = require_generator(ctx, "mimic")
        index = int(torch.randint(h, (1,), generator=gen, device=gen.device).item())
    else:
        index = int(target)
        if not -h <= index < h:
            raise ValueError(f"mimic: target {index} is out of range for {h} honest rows")
        index %= h
    return repeat_row(honest[index], num_byzantine)
