r"""Nearest-neighbour mixing (NNM).

.. math::
    \mathrm{NNM}_f(x_1, \dots, x_n) = \Bigl(\frac{1}{n - f} \sum_{j \in N_1} x_j,
        \ \dots,\ \frac{1}{n - f} \sum_{j \in N_n} x_j\Bigr)

where :math:`N_i` holds the :math:`n - f` rows nearest to :math:`x_i`, :math:`x_i` itself
included. Mixing pulls every row (Byzantine ones too) toward its honest neighbours, which lets a
standard robust aggregator downstream reach the optimal error under heterogeneity. The number of
Byzantine rows the next stage must tolerate stays ``f`` (no ``f_after``).

One Gram matrix for the distances and one ``(n, n) @ (n, d)`` product for the means (a mixing
matrix with ``1/(n - f)`` on each row's neighbours): no ``(n, n - f, d)`` gather. Ties in
distance go to the lower row index. Non-finite rows are nobody's neighbour and come out as NaN
rows (the next stage drops them); the other rows mix among the finite rows with the ``n - f``
neighbours they would have had.

Needs :math:`n \ge 2f + 1`.

Reference: Y. Allouah, S. Farhadkhani, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan, "Fixing
by Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.aggregators.base import check_f, pairwise_sq_distances
from shieldwall.preaggregators import PREAGGREGATORS
from shieldwall.preaggregators._common import embed_rows, finite_rows

__all__ = ["nnm", "nnm_mixing_matrix"]


def nnm_mixing_matrix(sq_dists: Tensor, k: int) -> Tensor:
    """``(n, n)`` matrix with ``1/k`` on each row's ``k`` nearest rows (itself first)."""
    n = sq_dists.shape[0]
    ranked = sq_dists.clone()
    ranked.fill_diagonal_(-1.0)  # a row is always its own nearest neighbour
    # Stable sort: ties in distance go to the lower index.
    neighbours = torch.sort(ranked, dim=1, stable=True).indices[:, :k]
    mixing = sq_dists.new_zeros(n, n)
    return mixing.scatter_(1, neighbours, 1.0 / k)


@PREAGGREGATORS.register("nnm", aliases=("nearest_neighbor_mixing", "nearest_neighbour_mixing"))
def nnm(updates: Tensor, f: int) -> Tensor:
    r"""Replace every row by the mean of its ``n - f`` nearest rows (itself included).

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated; needs :math:`n \ge 2f + 1`. More than ``f``
            non-finite rows raise ``ValueError``.

    Returns:
        ``(n, d)``.
    """
    n = updates.shape[0]
    check_f("NNM", n, f, min_n=2 * f + 1, bound="n >= 2f + 1")
    finite = finite_rows(updates, f, "NNM")
    rows = updates if finite is None else updates[finite]
    mixing = nnm_mixing_matrix(pairwise_sq_distances(rows), n - f)
    mixed = mixing.to(rows.dtype) @ rows
    return mixed if finite is None else embed_rows(mixed, finite)
