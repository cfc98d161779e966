r"""Adaptive Robust Clipping (ARC).

.. math::
    k = \Bigl\lfloor 2 \cdot \frac{f}{n} \cdot (n - f) \Bigr\rfloor, \qquad
    \mathrm{ARC}_f(x_1, \dots, x_n) = \Bigl(\min\Bigl(1, \frac{\tau}{\|x_1\|_2}\Bigr) x_1,
        \ \dots,\ \min\Bigl(1, \frac{\tau}{\|x_n\|_2}\Bigr) x_n\Bigr)

where :math:`\tau = \|x_{\pi(k+1)}\|_2` is the :math:`(k+1)`-th largest norm
(:math:`\|x_{\pi(1)}\|_2 \ge \dots \ge \|x_{\pi(n)}\|_2`): the ``k`` rows of largest norm are
clipped to the norm of the largest row left unclipped, the others are untouched. This is
Algorithm 2 of the paper (and ByzFL's ``ARC``); :math:`k \ge f` whenever :math:`n \ge 2f`, so
every Byzantine row of outsized norm is clipped to a norm some honest row has or exceeds.

Non-finite rows count as the largest norms (they are among the ``k`` clipped) and come out as
NaN rows for the next stage to drop. Norms are accumulated in float64.

Needs :math:`n \ge 2f + 1`.

Reference: Y. Allouah, R. Guerraoui, N. Gupta, A. Jellouli, G. Rizk, J. Stephan, "Boosting
Robustness by Clipping Gradients in Distributed Learning" (first titled "The Vital Role of
Gradient Clipping in Byzantine-Resilient Distributed Learning"), arXiv:2405.14432, 2024.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.aggregators.base import check_f, row_norms
from shieldwall.preaggregators import PREAGGREGATORS
from shieldwall.preaggregators._common import finite_rows

__all__ = ["arc", "arc_num_clipped"]


def arc_num_clipped(n: int, f: int) -> int:
    r"""Number of rows ARC clips: :math:`\lfloor 2 f (n - f) / n \rfloor` (integer arithmetic)."""
    return (2 * f * (n - f)) // n


@PREAGGREGATORS.register("arc", aliases=("adaptive_robust_clipping", "adaptive_clipping"))
def arc(updates: Tensor, f: int) -> Tensor:
    r"""Clip the :math:`k = \lfloor 2 f (n - f) / n \rfloor` largest rows to the next norm.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated; needs :math:`n \ge 2f + 1`. More than ``f``
            non-finite rows raise ``ValueError``.

    Returns:
        ``(n, d)``: a new tensor (``f = 0`` clips nothing and returns a copy).
    """
    n = updates.shape[0]
    check_f("ARC", n, f, min_n=2 * f + 1, bound="n >= 2f + 1")
    finite_rows(updates, f, "ARC")
    k = arc_num_clipped(n, f)
    if k == 0:
        return updates.clone()
    norms = row_norms(updates).nan_to_num(nan=float("inf"))
    threshold = norms.topk(k + 1).values[k]  # the (k+1)-th largest norm: finite, as k >= f
    clipped = torch.zeros_like(norms, dtype=torch.bool)
    clipped[norms.topk(k).indices] = True
    scale = torch.where(clipped & (norms > threshold), threshold / norms, torch.ones_like(norms))
    scale = scale.masked_fill(~torch.isfinite(norms), float("nan"))
    return updates * scale.to(updates.dtype)[:, None]
