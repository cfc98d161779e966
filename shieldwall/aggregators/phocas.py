r"""Phocas: per coordinate, the mean of the ``n - b`` values nearest to the trimmed mean.

.. math::
    \bigl[\mathrm{Phocas}_b(x_1, \dots, x_n)\bigr]_k = \frac{1}{n - b} \sum_{i \in N_k} [x_i]_k,
    \qquad N_k = \text{the } n - b \text{ rows whose } [x_i]_k
        \text{ are nearest to } \bigl[\mathrm{TrMean}_b(x_1, \dots, x_n)\bigr]_k

with :math:`\mathrm{TrMean}_b` the coordinate-wise trimmed mean
(:mod:`~shieldwall.aggregators.trimmed_mean`). Ties in distance go to the smaller value.

Reference: C. Xie, O. Koyejo, I. Gupta, "Phocas: dimensional Byzantine-resilient stochastic
gradient descent", arXiv:1805.09682, 2018.
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
from shieldwall.aggregators.trimmed_mean import trimmed_mean_of_sorted

__all__ = ["phocas"]


def _trim(f: int, b: int | None) -> int:
    return f if b is None else b


def _check(n: int, f: int, *, b: int | None = None) -> None:
    check_f("Phocas", n, f)
    trim = _trim(f, b)
    if b is not None and b < f:
        raise ValueError(
            f"Phocas needs b >= f to tolerate f Byzantine rows, got n={n}, f={f}, b={b}"
        )
    check_f("Phocas", n, f, min_n=2 * trim + 1, bound=f"n > 2b = {2 * trim}")


@AGGREGATORS.register("phocas", min_n=lambda f, b=None, **_: 2 * _trim(f, b) + 1)
@nonfinite_safe(check=_check)
def phocas(updates: Tensor, f: int, *, b: int | None = None) -> Tensor:
    r"""Mean of the ``n - b`` values nearest to the ``b``-trimmed mean, per coordinate.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated.
        b: trimming of the centre and number of values left out of the average (default
            ``None`` = ``f``); needs :math:`b \ge f` and :math:`n > 2b`. Rows with NaN/Inf are
            dropped first (each spends one unit of ``f``); an explicit ``b`` is kept as given.

    Returns:
        ``(d,)``. Costs one sort of every column (in blocks of columns: sorting networks on the
        CPU with numba, :mod:`~shieldwall.aggregators._select`), shared by the trimmed mean and
        the selection.
    """
    trim = _trim(f, b)
    n = updates.shape[0]
    if n <= 2 * trim:  # an explicit b may exceed what is left after dropping NaN rows
        raise ValueError(f"Phocas needs n > 2b, got n={n}, f={f}, b={trim}")
    fast = _select.columns_reduce(updates, _select.CLOSEST_TO_TRIMMED_MEAN, b=trim, k=n - trim)
    if fast is not None:
        return fast

    def block_phocas(block: Tensor) -> Tensor:
        sorted_values = sort_columns(block)
        centre = trimmed_mean_of_sorted(sorted_values, trim)
        return mean_of_closest_sorted(sorted_values, centre, n - trim)

    return columnwise(block_phocas, updates)
