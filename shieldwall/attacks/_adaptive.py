"""Line search shared by the adaptive attacks (``alie_adaptive``, ``ipm_adaptive``).

An adaptive attack scales a fixed direction by a factor :math:`c` and picks the factor that
hurts the configured defense most this round:

.. math:: c^\\star = \\arg\\max_{c \\in [c_{lo}, c_{hi}]}
          \\lVert \\mathrm{AGG}(H \\cup \\{b(c)\\}^{m}) - \\bar h \\rVert_2 ,

where H are the honest rows, :math:`\\bar h` their mean, and ``AGG`` is ``ctx.aggregator`` run
with ``f = ctx.f``. The objective of a robust rule is neither smooth nor unimodal in c (a row is
selected or not), so golden-section search has no guarantee; we use a coarse-to-fine grid: a
grid of ``GRID`` points over the whole range, then repeatedly a grid over the neighbourhood
(± one grid step) of the best factor so far, until ``num_evals`` aggregator calls are spent.
Non-finite objective values count as −∞; ties keep the earliest factor evaluated, and the
non-adaptive attack's own factor (when given) is evaluated first, so the adaptive attack never
does worse than the plain one on this objective when that factor lies in the range.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from shieldwall.attacks._utils import repeat_row
from shieldwall.attacks.base import AttackContext

__all__ = ["GRID", "coarse_to_fine_max", "aggregate_damage", "search_factor"]

#: Points per level of the coarse-to-fine grid.
GRID: int = 5


def coarse_to_fine_max(
    objective: Callable[[float], float],
    lo: float,
    hi: float,
    num_evals: int,
    *,
    first: tuple[float, ...] = (),
) -> tuple[float, float]:
    """Maximise ``objective`` over ``[lo, hi]`` with at most ``num_evals`` calls.

    Returns ``(best_factor, best_value)``. ``first`` are evaluated before the grid (and count
    toward the budget); those outside ``[lo, hi]`` are ignored.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"factor_range must be finite with lo <= hi, got ({lo}, {hi})")
    if num_evals < 1:
        raise ValueError(f"num_evals must be >= 1, got {num_evals}")
    values: dict[float, float] = {}
    best_x, best_v = math.nan, -math.inf

    def evaluate(x: float) -> None:
        nonlocal best_x, best_v
        if x in values or len(values) >= num_evals:
            return
        v = float(objective(x))
        v = v if math.isfinite(v) else -math.inf
        values[x] = v
        if v > best_v or math.isnan(best_x):
            best_x, best_v = x, v

    for x in first:
        if lo <= x <= hi:
            evaluate(float(x))
    a, b = float(lo), float(hi)
    while len(values) < num_evals:
        before = len(values)
        grid = [a + (b - a) * k / (GRID - 1) for k in range(GRID)] if b > a else [a]
        for x in grid:
            evaluate(x)
        if len(values) == before:  # the interval collapsed onto evaluated points
            break
        step = (b - a) / (GRID - 1)
        a, b = max(lo, best_x - step), min(hi, best_x + step)
    return best_x, best_v


def aggregate_damage(honest: Tensor, byzantine: Tensor, ctx: AttackContext) -> float:
    """``‖ctx.aggregator(honest ∪ byzantine, ctx.f) − mean(honest)‖₂`` (honest rows first)."""
    if ctx.aggregator is None:
        raise ValueError("aggregate_damage needs ctx.aggregator")
    rows = torch.cat([honest, byzantine], dim=0)
    agg = ctx.aggregator(rows, ctx.f)
    return float((agg.to(honest.dtype) - honest.mean(dim=0)).norm())


def search_factor(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    make_row: Callable[[float], Tensor],
    factor_range: tuple[float, float],
    num_evals: int,
    default: float | None,
) -> float:
    """The factor in ``factor_range`` maximising :func:`aggregate_damage` of ``make_row``.

    Every Byzantine row is ``make_row(factor)``; with ``num_byzantine == 0`` nothing is searched
    and ``default`` (or the range's lower end) is returned.
    """
    lo, hi = (float(v) for v in factor_range)
    if num_byzantine == 0:
        return lo if default is None else float(default)

    def objective(c: float) -> float:
        return aggregate_damage(honest, repeat_row(make_row(c), num_byzantine), ctx)

    first = () if default is None else (float(default),)
    best, _ = coarse_to_fine_max(objective, lo, hi, num_evals, first=first)
    return best
