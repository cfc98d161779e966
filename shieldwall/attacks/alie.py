"""A Little Is Enough (Baruch, Baruch & Goldberg 2019, "A little is enough: Circumventing
defenses for distributed learning", NeurIPS), and an adaptive variant.

Every Byzantine worker sends the same row, shifted from the coordinate-wise mean by a few
coordinate-wise standard deviations:

.. math:: b_k = \\mu_k - z\\,\\sigma_k \\qquad (k = 1..d),

μ and σ being the mean and (unbiased) standard deviation of the honest updates. The paper's
Algorithm picks the largest z such that enough honest workers ("supporters") lie farther from
the mean than the Byzantine value, so that median-like and distance-based rules keep it:

.. math:: s = \\lfloor n/2 + 1 \\rfloor - m, \\qquad
          z_{max} = \\max_z \\{\\, \\phi(z) < (n - s)/n \\,\\} = \\Phi^{-1}\\big((n - s)/n\\big),

with n the number of workers, m the number of Byzantine ones (here ``ctx.n`` and ``ctx.f``) and
Φ the standard normal CDF. E.g. n = 50, m = 24: s = 2, z = Φ⁻¹(0.96) ≈ 1.7507; n = 25, m = 5:
s = 8, z = Φ⁻¹(0.68) ≈ 0.4677. (Blades and the bucketing paper's code use the honest-only
variant Φ⁻¹((n − m − s)/(n − m)); ``z_rule="honest"`` reproduces it.) When m ≥ ⌊n/2 + 1⌋,
s ≤ 0 and z_max is infinite: the attack then needs an explicit ``z``.

The attack is non-omniscient in the paper (the attackers estimate μ, σ from their own honest
updates; ``omniscient=False``); given every honest update it uses them all.

``alie_adaptive`` (not in the paper) replaces the fixed z with the one that moves the configured
defense's output farthest from the honest mean this round (:mod:`._adaptive`).
"""

from __future__ import annotations

import math
from statistics import NormalDist

from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._adaptive import search_factor
from shieldwall.attacks._utils import check_honest, coordinate_std, repeat_row
from shieldwall.attacks.base import AttackContext

__all__ = ["alie", "alie_adaptive", "alie_z"]


def alie_z(n: int, f: int, rule: str = "baruch") -> float:
    """The paper's z_max = Φ⁻¹((n − s)/n) with s = ⌊n/2 + 1⌋ − f.

    ``rule="honest"``: the bucketing paper's and Blades' code, Φ⁻¹((n − f − s)/(n − f)) (the
    supporters counted among the honest workers only; n = 25, f = 5: Φ⁻¹(0.6) ≈ 0.2533).

    Raises ``ValueError`` when ``f >= ⌊n/2 + 1⌋`` (s ≤ 0: no finite z) or the inputs are invalid.
    """
    if n < 1 or f < 0 or f > n:
        raise ValueError(f"alie: need n >= 1 and 0 <= f <= n, got n={n}, f={f}")
    s = math.floor(n / 2 + 1) - f
    if s <= 0:
        raise ValueError(
            f"alie: z_max is infinite for n={n}, f={f} (s = floor(n/2 + 1) - f = {s} <= 0); "
            "pass z explicitly"
        )
    rule = str(rule).strip().lower()
    if rule == "baruch":
        return NormalDist().inv_cdf((n - s) / n)
    if rule == "honest":
        if n - f - s <= 0:
            raise ValueError(f"alie: no finite honest-rule z for n={n}, f={f}; pass z explicitly")
        return NormalDist().inv_cdf((n - f - s) / (n - f))
    raise ValueError(f"alie: z_rule must be 'baruch' or 'honest', got {rule!r}")


def _alie_row(honest: Tensor, z: float) -> Tensor:
    return honest.mean(dim=0) - z * coordinate_std(honest)


@ATTACKS.register(
    "alie", aliases=("a_little_is_enough", "lie", "little"), kind="update", omniscient=False
)
def alie(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    z: float | None = None,
    z_rule: str = "baruch",
) -> Tensor:
    """μ − z·σ per coordinate, the same row for every Byzantine worker.

    Args:
        honest: ``(h, d)`` honest updates the attacker sees (h ≥ 2 for a non-zero σ).
        num_byzantine: rows to return.
        ctx: ``ctx.n`` and ``ctx.f`` give the paper's z when ``z`` is None.
        z: number of standard deviations; ``None`` → :func:`alie_z` (ctx.n, ctx.f, z_rule).
        z_rule: ``"baruch"`` (default, the ALIE paper's Φ⁻¹((n − s)/n)) or ``"honest"`` (the
            bucketing paper's code, Φ⁻¹((n − f − s)/(n − f))); used when ``z`` is None.
    """
    check_honest(honest, num_byzantine, "alie")
    z_value = alie_z(ctx.n, ctx.f, z_rule) if z is None else float(z)
    return repeat_row(_alie_row(honest, z_value), num_byzantine)


@ATTACKS.register(
    "alie_adaptive",
    aliases=("adaptive_alie", "alie_opt"),
    kind="update",
    omniscient=True,
    adaptive=True,
)
def alie_adaptive(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    factor_range: tuple[float, float] = (0.0, 5.0),
    num_evals: int = 20,
) -> Tensor:
    """ALIE with z chosen each round to maximise the damage to ``ctx.aggregator``.

    The damage of z is ‖AGG(honest ∪ {μ − zσ}ᵐ) − mean(honest)‖ (see :mod:`._adaptive`); the
    paper's z (when finite and inside ``factor_range``) is tried first. Without
    ``ctx.aggregator`` this is plain :func:`alie` with the paper's z.

    Args:
        honest: ``(h, d)`` honest updates of the round.
        num_byzantine: rows to return.
        ctx: ``ctx.aggregator`` (``fn(updates, f)``), ``ctx.f``, ``ctx.n``.
        factor_range: ``(lo, hi)`` interval searched for z (default (0, 5)).
        num_evals: aggregator calls allowed (default 20).
    """
    check_honest(honest, num_byzantine, "alie_adaptive")
    if ctx.aggregator is None:
        return alie(honest, num_byzantine, ctx)
    try:
        default: float | None = alie_z(ctx.n, ctx.f)
    except ValueError:
        default = None
    mean, std = honest.mean(dim=0), coordinate_std(honest)
    best = search_factor(
        honest, num_byzantine, ctx, lambda c: mean - c * std, factor_range, num_evals, default
    )
    return repeat_row(mean - best * std, num_byzantine)
