"""Plain (weighted) averaging: the non-robust baseline."""

from __future__ import annotations

from torch import Tensor

from shieldwall.aggregators import AGGREGATORS
from shieldwall.aggregators.base import check_updates

__all__ = ["mean"]


@AGGREGATORS.register("mean", aliases=("average", "avg", "fedavg"), robust=False)
def mean(updates: Tensor, f: int = 0, *, weights: Tensor | None = None) -> Tensor:
    r"""Arithmetic mean :math:`\frac{1}{n}\sum_i x_i`, or :math:`\sum_i w_i x_i / \sum_i w_i`.

    Not robust: a single row can move the result arbitrarily far (``f`` is accepted and ignored).
    Non-finite rows are *not* dropped here on purpose, so that the damage an attack does to the
    undefended baseline is visible.

    Args:
        updates: ``(n, d)`` rows.
        f: ignored.
        weights: optional ``(n,)`` non-negative weights (FedAvg: local sample counts).
    """
    check_updates(updates)
    if weights is None:
        return updates.mean(dim=0)
    w = weights.to(dtype=updates.dtype, device=updates.device)
    return (w @ updates) / w.sum()
