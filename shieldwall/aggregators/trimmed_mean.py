r"""Coordinate-wise trimmed mean.

.. math::
    \bigl[\mathrm{TrMean}_b(x_1, \dots, x_n)\bigr]_k
        = \frac{1}{n - 2b} \sum_{j = b + 1}^{n - b} [x]_{k,(j)}

where :math:`[x]_{k,(1)} \le \dots \le [x]_{k,(n)}` are the values of coordinate ``k`` sorted:
the ``b`` largest and ``b`` smallest values of each coordinate are dropped and the rest averaged.

Reference: D. Yin, Y. Chen, K. Ramchandran, P. Bartlett, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML 2018.
"""

from __future__ import annotations

from torch import Tensor

from shieldwall.aggregators import AGGREGATORS, _select
from shieldwall.aggregators.base import check_f, columnwise, nonfinite_safe, sort_columns

__all__ = ["trimmed_mean", "trimmed_mean_of_sorted"]


def trimmed_mean_of_sorted(sorted_values: Tensor, b: int) -> Tensor:
    """Trimmed mean from values sorted along dim 0 (shared with Phocas)."""
    n = sorted_values.shape[0]
    return sorted_values[b : n - b].mean(dim=0)


def _trim(f: int, b: int | None) -> int:
    return f if b is None else b


def _check(n: int, f: int, *, b: int | None = None) -> None:
    check_f("TrimmedMean", n, f)
    trim = _trim(f, b)
    if b is not None and b < f:
        raise ValueError(
            f"TrimmedMean needs b >= f to tolerate f Byzantine rows, got n={n}, f={f}, b={b}"
        )
    check_f("TrimmedMean", n, f, min_n=2 * trim + 1, bound=f"n > 2b = {2 * trim}")


@AGGREGATORS.register(
    "trimmed_mean",
    aliases=("cwtm", "coordinate_trimmed_mean", "trmean"),
    min_n=lambda f, b=None, **_: 2 * _trim(f, b) + 1,
)
@nonfinite_safe(check=_check)
def trimmed_mean(updates: Tensor, f: int, *, b: int | None = None) -> Tensor:
    r"""Per coordinate, drop the ``b`` largest and ``b`` smallest values and average the rest.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated.
        b: values trimmed from each side (default ``None`` = ``f``); needs :math:`b \ge f` and
            :math:`n > 2b`. Rows with NaN/Inf are dropped first (each spends one unit of ``f``);
            an explicit ``b`` is kept as given, the default follows the reduced ``f``.

    Returns:
        ``(d,)``: each coordinate lies within the honest rows' range for it. Costs one sort of
        every column, done in blocks of columns (sorting networks on the CPU with numba,
        :mod:`~shieldwall.aggregators._select`; else
        :func:`~shieldwall.aggregators.base.columnwise`).
    """
    trim = _trim(f, b)
    n = updates.shape[0]
    if n <= 2 * trim:  # an explicit b may exceed what is left after dropping NaN rows
        raise ValueError(f"TrimmedMean needs n > 2b, got n={n}, f={f}, b={trim}")
    if trim == 0:
        return updates.mean(dim=0)
    fast = _select.columns_reduce(updates, _select.TRIMMED_MEAN, b=trim)
    if fast is not None:
        return fast
    return columnwise(lambda block: trimmed_mean_of_sorted(sort_columns(block), trim), updates)
