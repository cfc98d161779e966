r"""Minimum-diameter averaging (MDA).

.. math::
    \mathrm{MDA}_f(x_1, \dots, x_n) = \frac{1}{n - f} \sum_{i \in S^\star} x_i, \qquad
    S^\star = \arg\min_{|S| = n - f}\ \max_{i, j \in S} \|x_i - x_j\|_2

The subset of ``n - f`` rows of smallest diameter is found exactly, by enumerating the
:math:`\binom{n}{f}` sets of ``f`` rows left out: cheap for the small ``n`` of cross-silo setups
(:math:`\binom{16}{3} = 560`), hopeless for large ``n`` with large ``f``, so ``max_subsets`` caps
the enumeration and a larger one raises ``ValueError`` instead of running for hours. Distances
come from one Gram matrix; the subsets are scored in chunks as ``(c, n, n)`` masked maxima of
that ``(n, n)`` matrix (never an ``(n, n, d)`` temporary). Ties in diameter go to the subset that
leaves out the lexicographically smallest set of rows.

Needs :math:`n \ge 2f + 1`.

Reference: E. M. El Mhamdi, R. Guerraoui, S. Rouault, "Fast and Robust Distributed Learning in
High Dimension", SRDS 2020 (MDA).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS
from shieldwall.aggregators.base import (
    AggregateResult,
    check_f,
    nonfinite_safe_info,
    pairwise_sq_distances,
)

__all__ = ["mda", "mda_with_info"]

_CHUNK_ELEMENTS = 1 << 22  # entries of the (c, n, n) block scored at once


def _check(n: int, f: int, *, max_subsets: int = 100_000) -> None:
    check_f("MDA", n, f, min_n=2 * f + 1, bound="n >= 2f + 1")
    count = math.comb(n, f)
    if count > max_subsets:
        raise ValueError(
            f"MDA would enumerate C(n, f) = C({n}, {f}) = {count} subsets, more than "
            f"max_subsets={max_subsets}; use a smaller n or f, or another rule"
        )


@nonfinite_safe_info(check=_check)
def mda_with_info(updates: Tensor, f: int, *, max_subsets: int = 100_000) -> AggregateResult:
    """:func:`mda` returning the ``n - f`` rows kept; ``scores`` is ``None``."""
    n = updates.shape[0]
    if f == 0:
        return AggregateResult(updates.mean(dim=0), torch.arange(n, device=updates.device))
    sq_dists = pairwise_sq_distances(updates)
    left_out = torch.combinations(torch.arange(n, device=updates.device), r=f)  # (C, f)
    best_diameter = None
    best_index = 0
    chunk = max(1, _CHUNK_ELEMENTS // (n * n))
    for start in range(0, left_out.shape[0], chunk):
        rows = left_out[start : start + chunk]
        keep = torch.ones(rows.shape[0], n, dtype=torch.bool, device=updates.device)
        keep.scatter_(1, rows, False)
        pair_kept = keep[:, :, None] & keep[:, None, :]
        diameters = sq_dists.masked_fill(~pair_kept, 0).amax(dim=(1, 2))  # squared diameters
        i = int(torch.argmin(diameters))  # first minimum: lexicographic tie-break
        if best_diameter is None or bool(diameters[i] < best_diameter):
            best_diameter, best_index = diameters[i], start + i
    keep = torch.ones(n, dtype=torch.bool, device=updates.device)
    keep[left_out[best_index]] = False
    selected = keep.nonzero().squeeze(1)
    weights = updates.new_zeros(n)
    weights[selected] = 1.0 / selected.numel()
    return AggregateResult(weights @ updates, selected)


@AGGREGATORS.register(
    "mda",
    aliases=("minimum_diameter_averaging", "min_diameter"),
    info=mda_with_info,
    selects=True,
    min_n=lambda f, **_: 2 * f + 1,
)
def mda(updates: Tensor, f: int, *, max_subsets: int = 100_000) -> Tensor:
    r"""Mean of the ``n - f`` rows of smallest diameter.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated; needs :math:`n \ge 2f + 1`. Rows with NaN/Inf
            are dropped first, each one spending one unit of ``f`` (which also shrinks the
            enumeration).
        max_subsets: largest :math:`\binom{n}{f}` enumerated (default 100 000); beyond it a
            ``ValueError`` is raised.

    Returns:
        ``(d,)``: mean of the selected rows. Use :func:`mda_with_info` for which rows.
    """
    return mda_with_info(updates, f, max_subsets=max_subsets).vector
