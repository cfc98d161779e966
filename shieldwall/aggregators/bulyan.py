r"""Bulyan: iterated Krum selection, then a coordinate-wise trimmed average around the median.

1. Selection: :math:`\theta = n - 2f` rows are chosen one at a time; each time Krum (with the
   same ``f``) is run on the rows not chosen yet and its winner moves to the selected set
   :math:`S`. With :math:`r` rows left, a score sums the :math:`r - f - 2` smallest distances to
   the other remaining rows.
2. Aggregation, per coordinate :math:`k`, with :math:`\beta = \theta - 2f`:

.. math::
    \bigl[\mathrm{Bulyan}_f(x_1, \dots, x_n)\bigr]_k = \frac{1}{\beta}
        \sum_{i \in B_k} [x_i]_k, \qquad
    B_k = \text{the } \beta \text{ rows of } S \text{ whose } [x_i]_k
        \text{ are nearest to } \mathrm{median}_{i \in S}\,[x_i]_k

Needs :math:`n \ge 4f + 3`. The distance matrix is computed once (one Gram matrix); the
iterations only mask rows and columns of it. With :math:`r` rows left Krum scores
:math:`r - f - 2` neighbours, and at least one: the last picks (:math:`r` down to
:math:`2f + 1`) are below Krum's own bound :math:`r \ge 2f + 3`, and for ``f = 1`` the last
would score none. Ties in score go to the lower index, as the :math:`\arg\min` of the
reference implementations (Flower's ``aggregate_bulyan`` / ``aggregate_krum``, which also score
at least one neighbour) sends them. They are not rare: with one neighbour scored (``f <= 2``)
the two rows of the closest pair always tie, so for ``f <= 2`` the rows selected can depend on
the order of the rows, in every implementation. The median of an even number of values is the
mean of the two middle ones (as in :mod:`~shieldwall.aggregators.median`), and ties in distance
to it go to the smaller value.

Reference: E. M. El Mhamdi, R. Guerraoui, S. Rouault, "The Hidden Vulnerability of Distributed
Learning in Byzantium", ICML 2018.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS, _select
from shieldwall.aggregators.base import (
    AggregateResult,
    check_f,
    columnwise,
    mean_of_closest_sorted,
    nonfinite_safe_info,
    pairwise_sq_distances,
    sort_columns,
)
from shieldwall.aggregators.krum import krum_scores
from shieldwall.aggregators.median import median_of_sorted

__all__ = ["bulyan", "bulyan_with_info", "bulyan_coordinate_phase", "iterated_krum"]


def iterated_krum(sq_dists: Tensor, f: int, count: int) -> Tensor:
    """Indices of ``count`` rows chosen by Krum repeatedly on the rows not chosen yet.

    One ``(n, n)`` distance matrix, each row sorted once (nearest first). ``alive[i, p]`` says
    whether the ``p``-th nearest row of row ``i`` is still in play; choosing a row clears one
    entry per row. A row's score is the sum of its first ``k`` alive entries (a cumulative count
    picks them), so a round costs a few ``O(n^2)`` elementwise passes and no re-sort. Returns
    the indices in the order chosen.
    """
    n = sq_dists.shape[0]
    device = sq_dists.device
    rows = torch.arange(n, device=device)
    others = sq_dists.clone()
    others.fill_diagonal_(float("inf"))
    nearest, order = others.sort(dim=1)  # row i: distances to the other rows, nearest first
    position = order.argsort(dim=1)  # position[i, j]: where row j sits in row i's order
    alive = torch.ones(n, n, dtype=torch.bool, device=device)
    alive[rows, position[rows, rows]] = False  # a row is not its own neighbour
    active = torch.ones(n, dtype=torch.bool, device=device)
    chosen: list[int] = []
    for step in range(count):
        left = n - step
        if left == 1:
            best = int(active.nonzero()[0])
        else:
            # Krum's n - f - 2 neighbours among the rows left; at least 1 (see module notes).
            k = max(1, left - f - 2)
            scored = alive & (alive.cumsum(dim=1, dtype=torch.int32) <= k)
            scores = torch.where(scored, nearest, 0.0).sum(dim=1)
            # The smallest score among the rows left; ties to the lower index.
            best = int((active & (scores == scores[active].min())).nonzero()[0])
        chosen.append(best)
        active[best] = False
        alive[rows, position[:, best]] = False
    return torch.tensor(chosen, dtype=torch.long, device=device)


def _check(n: int, f: int, **_) -> None:
    check_f("Bulyan", n, f, min_n=4 * f + 3, bound="n >= 4f + 3")


@nonfinite_safe_info(check=_check)
def bulyan_with_info(updates: Tensor, f: int) -> AggregateResult:
    """:func:`bulyan` returning the ``n - 2f`` rows selected (in selection order) and the
    first-round Krum score of every row."""
    n = updates.shape[0]
    theta = n - 2 * f
    beta = theta - 2 * f
    sq_dists = pairwise_sq_distances(updates)
    selected = iterated_krum(sq_dists, f, theta)
    vector = bulyan_coordinate_phase(updates, selected, beta)
    return AggregateResult(vector, selected, krum_scores(sq_dists, f))


def bulyan_coordinate_phase(updates: Tensor, selected: Tensor, beta: int) -> Tensor:
    """Phase 2: per coordinate, the mean of the ``beta`` values of the ``selected`` rows nearest
    to their median (numba sorting networks on the CPU, else torch sorts over column blocks)."""
    fast = _select.columns_reduce(updates, _select.CLOSEST_TO_MEDIAN, k=beta, rows=selected)
    if fast is not None:
        return fast

    def block_average(block: Tensor) -> Tensor:
        sorted_values = sort_columns(block.index_select(0, selected))
        return mean_of_closest_sorted(sorted_values, median_of_sorted(sorted_values), beta)

    return columnwise(block_average, updates)


@AGGREGATORS.register("bulyan", info=bulyan_with_info, selects=True, min_n=lambda f, **_: 4 * f + 3)
def bulyan(updates: Tensor, f: int) -> Tensor:
    r"""Bulyan over Krum.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated; needs :math:`n \ge 4f + 3`. Rows with NaN/Inf
            are dropped first, each one spending one unit of ``f``.

    Returns:
        ``(d,)``. Use :func:`bulyan_with_info` (or ``aggregate("bulyan", ...)``) for the rows the
        selection phase kept.
    """
    return bulyan_with_info(updates, f).vector
