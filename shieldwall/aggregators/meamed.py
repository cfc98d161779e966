r"""MeaMed: per coordinate, the mean of the ``n - f`` values nearest to the median.

.. math::
    \bigl[\mathrm{MeaMed}_f(x_1, \dots, x_n)\bigr]_k = \frac{1}{n - f} \sum_{i \in N_k} [x_i]_k,
    \qquad N_k = \text{the } n - f \text{ rows whose } [x_i]_k
        \text{ are nearest to } \mathrm{median}_i\,[x_i]_k

The median of an even number of values is the mean of the two middle ones (as in
:mod:`~shieldwall.aggregators.median`); ties in distance to it go to the smaller value.

Reference: C. Xie, O. Koyejo, I. Gupta, "Generalized Byzantine-tolerant SGD", arXiv:1802.10116,
2018 (mean-around-median, "MeaMed").
"""

from __future__ import annotations

from torch import Tensor

from shieldwall.aggregators import AGGREGATORS, _select
from shieldwall.aggregators.base import (
    check_f,
    columnwise,
    mean_of_closest_sorted,
    nonfinite_safe,
    sort_columns,
)
from shieldwall.aggregators.median import median_of_sorted

__all__ = ["meamed"]


def _check(n: int, f: int, **_) -> None:
    check_f("MeaMed", n, f, min_n=2 * f + 1, bound="n >= 2f + 1")


@AGGREGATORS.register(
    "meamed", aliases=("mean_around_median", "mea_med"), min_n=lambda f, **_: 2 * f + 1
)
@nonfinite_safe(check=_check)
def meamed(updates: Tensor, f: int) -> Tensor:
    r"""Mean of the ``n - f`` values nearest to the coordinate median, per coordinate.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated; needs :math:`n \ge 2f + 1`. Rows with NaN/Inf
            are dropped first, each one spending one unit of ``f``.

    Returns:
        ``(d,)``. Costs one sort of every column (in blocks of columns: sorting networks on the
        CPU with numba, :mod:`~shieldwall.aggregators._select`); the median and the ``n - f``
        nearest values (a window of the sorted column) both come from it.
    """
    keep = updates.shape[0] - f
    fast = _select.columns_reduce(updates, _select.CLOSEST_TO_MEDIAN, k=keep)
    if fast is not None:
        return fast

    def block_meamed(block: Tensor) -> Tensor:
        sorted_values = sort_columns(block)
        return mean_of_closest_sorted(sorted_values, median_of_sorted(sorted_values), keep)

    return columnwise(block_meamed, updates)
