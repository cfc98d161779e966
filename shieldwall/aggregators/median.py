r"""Coordinate-wise median.

.. math::
    \bigl[\mathrm{Median}(x_1, \dots, x_n)\bigr]_k
        = \mathrm{median}\bigl([x_1]_k, \dots, [x_n]_k\bigr)

For even ``n`` the median of a coordinate is the mean of its two middle values, the published
definition (Yin et al., 2018; also NumPy's): :func:`torch.median` returns the *lower* of the two,
which biases every coordinate downwards, so it is not used unaltered.

Reference: D. Yin, Y. Chen, K. Ramchandran, P. Bartlett, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML 2018.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS, _select
from shieldwall.aggregators.base import check_f, columnwise, nonfinite_safe

__all__ = ["median", "coordinate_median", "median_of_sorted"]


def coordinate_median(x: Tensor) -> Tensor:
    """Coordinate-wise median of finite ``(n, d)`` rows; mean of the two middle values for even n.

    On the CPU with numba: one pass of sorting networks over cache-sized blocks of columns
    (:mod:`~shieldwall.aggregators._select`). Otherwise one :func:`torch.median` along dim 0
    (the lower middle value) and, for even ``n``, one masked minimum for the upper middle value:
    the smallest value strictly above the lower one, unless the lower one is repeated across the
    middle (done in blocks of columns, see :func:`~shieldwall.aggregators.base.columnwise`).
    """
    fast = _select.columns_reduce(x, _select.MEDIAN)
    if fast is not None:
        return fast
    n = x.shape[0]
    lower = x.median(dim=0).values
    if n % 2 == 1:
        return lower
    return columnwise(_even_median, x, lower)


def _even_median(block: Tensor, lower: Tensor) -> Tensor:
    above = block > lower
    upper = torch.where(above, block, float("inf")).amin(dim=0)
    # Fewer than n/2 values strictly above the lower median: it is repeated at position n/2 + 1.
    n_above = above.sum(dim=0, dtype=torch.int32)
    upper = torch.where(n_above == block.shape[0] // 2, upper, lower)
    return _midpoint(lower, upper)


def median_of_sorted(sorted_values: Tensor) -> Tensor:
    """The same median from values already sorted along dim 0 (no second selection pass)."""
    n = sorted_values.shape[0]
    if n % 2 == 1:
        return sorted_values[n // 2].clone()
    return _midpoint(sorted_values[n // 2 - 1], sorted_values[n // 2])


def _midpoint(lower: Tensor, upper: Tensor) -> Tensor:
    # 0.5*a + 0.5*b rounds exactly like (a + b) / 2 but cannot overflow.
    return lower * 0.5 + upper * 0.5


def _check(n: int, f: int, **_) -> None:
    check_f("Median", n, f, min_n=2 * f + 1, bound="n >= 2f + 1")


@AGGREGATORS.register(
    "median",
    aliases=("coordinate_median", "coord-median", "cwmed", "coordinate-wise-median"),
    min_n=lambda f, **_: 2 * f + 1,
)
@nonfinite_safe(check=_check)
def median(updates: Tensor, f: int) -> Tensor:
    r"""Coordinate-wise median (mean of the two middle values for even ``n``).

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated; needs :math:`n \ge 2f + 1`. Rows with NaN/Inf
            are dropped first, each one spending one unit of ``f``.

    Returns:
        ``(d,)``: each coordinate lies within the range of the honest rows' values for that
        coordinate, whatever the ``f`` other rows hold.
    """
    return coordinate_median(updates)
