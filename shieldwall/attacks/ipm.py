"""Inner Product Manipulation (Xie, Koyejo & Gupta, "Fall of empires: Breaking Byzantine-tolerant
SGD by inner product manipulation", UAI 2019, PMLR 115, 2020), and an adaptive variant.

Every Byzantine worker sends the negated, scaled mean of the honest updates,

.. math:: b = -\\varepsilon \\cdot \\bar h, \\qquad \\bar h = \\tfrac{1}{h} \\textstyle\\sum_i h_i ,

so that the aggregate's inner product with the true gradient becomes negative
(:math:`\\langle b, \\bar h \\rangle = -\\varepsilon \\lVert \\bar h \\rVert^2 < 0`). A small ε
keeps the Byzantine rows close to the honest cluster, which is what defeats Krum-type rules; the
paper also uses larger ε against the coordinate-wise median. Default ε = 0.1 (the paper's
small-ε setting, also the default of the bucketing paper's and Blades' code).

The paper's attacker knows the honest mean (``omniscient=True``).

``ipm_adaptive`` (not in the paper) chooses ε each round to move the configured defense's output
farthest from the honest mean (:mod:`._adaptive`).
"""

from __future__ import annotations

from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._adaptive import search_factor
from shieldwall.attacks._utils import check_honest, repeat_row
from shieldwall.attacks.base import AttackContext

__all__ = ["ipm", "ipm_adaptive", "IPM_DEFAULT_EPSILON"]

#: The non-adaptive ε (the paper's small-ε setting).
IPM_DEFAULT_EPSILON: float = 0.1


@ATTACKS.register("ipm", aliases=("inner_product_manipulation",), kind="update", omniscient=True)
def ipm(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    epsilon: float = IPM_DEFAULT_EPSILON,
) -> Tensor:
    """−epsilon · mean(honest), the same row for every Byzantine worker.

    Args:
        honest: ``(h, d)`` honest updates of the round.
        num_byzantine: rows to return.
        ctx: unused.
        epsilon: scale of the negated mean (default 0.1).
    """
    check_honest(honest, num_byzantine, "ipm")
    return repeat_row(honest.mean(dim=0) * (-float(epsilon)), num_byzantine)


@ATTACKS.register(
    "ipm_adaptive",
    aliases=("adaptive_ipm", "ipm_opt"),
    kind="update",
    omniscient=True,
    adaptive=True,
)
def ipm_adaptive(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    factor_range: tuple[float, float] = (0.0, 10.0),
    num_evals: int = 20,
) -> Tensor:
    """IPM with ε chosen each round to maximise the damage to ``ctx.aggregator``.

    The damage of ε is ‖AGG(honest ∪ {−ε·mean}ᵐ) − mean(honest)‖ (see :mod:`._adaptive`);
    ε = 0.1 is tried first when inside ``factor_range``. Without ``ctx.aggregator`` this is plain
    :func:`ipm` with ε = 0.1.

    Args:
        honest: ``(h, d)`` honest updates of the round.
        num_byzantine: rows to return.
        ctx: ``ctx.aggregator`` (``fn(updates, f)``) and ``ctx.f``.
        factor_range: ``(lo, hi)`` interval searched for ε (default (0, 10)).
        num_evals: aggregator calls allowed (default 20).
    """
    check_honest(honest, num_byzantine, "ipm_adaptive")
    if ctx.aggregator is None:
        return ipm(honest, num_byzantine, ctx)
    mean = honest.mean(dim=0)
    best = search_factor(
        honest,
        num_byzantine,
        ctx,
        lambda eps: mean * (-eps),
        factor_range,
        num_evals,
        IPM_DEFAULT_EPSILON,
    )
    return repeat_row(mean * (-best), num_byzantine)
