r"""Krum and Multi-Krum.

.. math::
    s(i) = \sum_{j \in \mathcal{N}_i} \|x_i - x_j\|_2^2, \qquad
    \mathrm{Krum}_f(x_1, \dots, x_n) = x_{i^\star},\quad i^\star = \arg\min_i s(i)

where :math:`\mathcal{N}_i` holds the :math:`n - f - 2` rows nearest to :math:`x_i` (itself
excluded). Multi-Krum averages the ``m`` rows of smallest score:

.. math::
    \mathrm{MultiKrum}_{f,m}(x_1, \dots, x_n) = \frac{1}{m} \sum_{i \in S_m} x_i,
    \qquad S_m = \text{the } m \text{ rows of smallest } s(i)

Both need :math:`n \ge 2f + 3`. All pairwise distances come from one Gram matrix
(:func:`~shieldwall.aggregators.base.pairwise_sq_distances`). Ties in score go to the lower
index, as the :math:`\arg\min` of the reference implementations (Flower's ``aggregate_krum``,
ByzFL, the bucketing paper's code) sends them; with random rows they only happen between equal
rows (copies), where the choice does not change the output.

``power`` (Krum only, default 1) scores with :math:`\sum_{j \in \mathcal{N}_i}
\|x_i - x_j\|_2^{2p}` instead; the bucketing paper's code (Karimireddy, He & Jaggi 2022,
``codes/aggregator/krum.py``) squares the already squared distances, i.e. ``power=2``. The
neighbour sets are the same; the chosen row can differ.

Reference: P. Blanchard, E. M. El Mhamdi, R. Guerraoui, J. Stainer, "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS
from shieldwall.aggregators.base import (
    AggregateResult,
    check_f,
    nonfinite_safe_info,
    pairwise_sq_distances,
)

__all__ = [
    "krum",
    "krum_with_info",
    "multikrum",
    "multikrum_with_info",
    "krum_scores",
    "rank_rows",
]


def krum_scores(sq_dists: Tensor, f: int, power: float = 1.0) -> Tensor:
    """Krum score of every row from an ``(n, n)`` squared-distance matrix.

    Sum of the ``n - f - 2`` smallest distances to *other* rows (0 when that count is < 1),
    each raised to ``power`` first.
    """
    n = sq_dists.shape[0]
    k = n - f - 2
    if k < 1:
        return sq_dists.new_zeros(n)
    others = sq_dists.clone()
    others.fill_diagonal_(float("inf"))
    nearest = others.topk(k, dim=1, largest=False).values
    return (nearest if power == 1.0 else nearest.pow(power)).sum(dim=1)


def rank_rows(scores: Tensor) -> Tensor:
    """Row indices ordered by Krum score, ties by index (a stable sort: ``argmin`` first)."""
    return torch.sort(scores, stable=True).indices


def _selection_mean(updates: Tensor, index: Tensor) -> Tensor:
    """Mean of ``updates[index]`` as one ``w @ updates`` pass (no ``(m, d)`` copy)."""
    if index.numel() == 1:
        return updates[int(index[0])].clone()
    weights = updates.new_zeros(updates.shape[0])
    weights[index] = 1.0 / index.numel()
    return weights @ updates


def _check_krum(n: int, f: int, **_) -> None:
    check_f("Krum", n, f, min_n=2 * f + 3, bound="n >= 2f + 3")


def _check_multikrum(n: int, f: int, *, m: int | None = None) -> None:
    check_f("MultiKrum", n, f, min_n=2 * f + 3, bound="n >= 2f + 3")
    if m is not None and not 1 <= m <= n - f:
        raise ValueError(f"MultiKrum needs 1 <= m <= n - f, got m={m}, n={n}, f={f}")


def _multikrum(updates: Tensor, f: int, m: int, power: float = 1.0) -> AggregateResult:
    sq_dists = pairwise_sq_distances(updates)
    scores = krum_scores(sq_dists, f, power)
    selected = rank_rows(scores)[:m]
    return AggregateResult(_selection_mean(updates, selected), selected, scores)


@nonfinite_safe_info(check=_check_multikrum)
def multikrum_with_info(updates: Tensor, f: int, *, m: int | None = None) -> AggregateResult:
    """:func:`multikrum` returning the selected rows (best first) and every row's score."""
    return _multikrum(updates, f, updates.shape[0] - f if m is None else m)


@nonfinite_safe_info(check=_check_krum)
def krum_with_info(updates: Tensor, f: int, *, power: float = 1.0) -> AggregateResult:
    """:func:`krum` returning the chosen row's index and every row's score."""
    if not (isinstance(power, (int, float)) and power > 0):
        raise ValueError(f"Krum needs power > 0, got power={power!r}")
    return _multikrum(updates, f, 1, float(power))


@AGGREGATORS.register("krum", info=krum_with_info, selects=True, min_n=lambda f, **_: 2 * f + 3)
def krum(updates: Tensor, f: int, *, power: float = 1.0) -> Tensor:
    r"""The row with the smallest Krum score.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated; needs :math:`n \ge 2f + 3`. Rows with NaN/Inf
            are dropped first, each one spending one unit of ``f``.
        power: exponent on each squared distance in the score (default 1, Blanchard et al.;
            2 is the bucketing paper's code).

    Returns:
        ``(d,)``: a copy of one input row. Use :func:`krum_with_info` (or
        ``aggregate("krum", ...)``) to learn which.
    """
    return krum_with_info(updates, f, power=power).vector


@AGGREGATORS.register(
    "multikrum",
    aliases=("multi-krum", "multi_krum"),
    info=multikrum_with_info,
    selects=True,
    min_n=lambda f, **_: 2 * f + 3,
)
def multikrum(updates: Tensor, f: int, *, m: int | None = None) -> Tensor:
    r"""Mean of the ``m`` rows with the smallest Krum scores.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated; needs :math:`n \ge 2f + 3`. Rows with NaN/Inf
            are dropped first, each one spending one unit of ``f``.
        m: rows averaged, :math:`1 \le m \le n - f` (default ``None`` = :math:`n - f`, the
            choice of El Mhamdi et al., 2018); ``m = 1`` is Krum.

    Returns:
        ``(d,)``: mean of the selected rows.
    """
    return multikrum_with_info(updates, f, m=m).vector
