r"""Static norm clipping.

.. math::
    \mathrm{Clip}_c(x_1, \dots, x_n) = \Bigl(\min\Bigl(1, \frac{c}{\|x_1\|_2}\Bigr) x_1,
        \ \dots,\ \min\Bigl(1, \frac{c}{\|x_n\|_2}\Bigr) x_n\Bigr)

Every row keeps its direction and gets norm at most ``c``. The threshold is absolute, so it must
fit the scale of the model's updates (see :mod:`~shieldwall.preaggregators.arc` for an adaptive
one). Norms are accumulated in float64, so float32 rows of ``1e30`` are clipped correctly rather
than overflowing to zero. Non-finite rows come out as NaN rows (the next stage drops them).

Reference: the static clipping baseline of Y. Allouah, R. Guerraoui, N. Gupta, A. Jellouli,
G. Rizk, J. Stephan, "Boosting Robustness by Clipping Gradients in Distributed Learning",
arXiv:2405.14432, 2024.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.aggregators.base import row_norms
from shieldwall.preaggregators import PREAGGREGATORS
from shieldwall.preaggregators._common import finite_rows

__all__ = ["clipping", "clip_rows"]


def clip_rows(updates: Tensor, threshold: float | Tensor) -> Tensor:
    """Scale every row with norm above ``threshold`` down to norm ``threshold``.

    Rows with NaN/Inf come out all-NaN. One norm pass and one scaling pass; a new tensor.
    """
    norms = row_norms(updates)
    scale = torch.where(norms > threshold, threshold / norms, torch.ones_like(norms))
    scale = scale.masked_fill(~torch.isfinite(norms), float("nan"))
    return updates * scale.to(updates.dtype)[:, None]


@PREAGGREGATORS.register("clipping", aliases=("static_clipping", "norm_clipping", "clip"))
def clipping(updates: Tensor, f: int, *, c: float = 1.0) -> Tensor:
    r"""Clip every row to Euclidean norm at most ``c``.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows (only checked: more than ``f`` non-finite rows raise).
        c: clipping threshold :math:`c > 0` (default ``1.0``; set it to the scale of honest
            updates, e.g. a high quantile of their norms).

    Returns:
        ``(n, d)``.
    """
    finite_rows(updates, f, "Clipping")
    if not c > 0:
        raise ValueError(f"Clipping needs c > 0, got c={c!r}")
    return clip_rows(updates, float(c))
