r"""Bucketing: average the rows in random buckets of size ``s`` before aggregating.

.. math::
    \mathrm{Bucketing}_s(x_1, \dots, x_n) = \Bigl(\frac{1}{|B_1|} \sum_{i \in B_1} x_{\pi(i)},
        \ \dots,\ \frac{1}{|B_m|} \sum_{i \in B_m} x_{\pi(i)}\Bigr),
    \qquad B_b = \{(b-1)s + 1, \dots, \min(bs, n)\}

with :math:`\pi` a uniformly random permutation and :math:`m = \lceil n / s \rceil` buckets (the
last one holds :math:`n - (m - 1)s` rows when ``s`` does not divide ``n``, as in ByzFL).
Averaging shrinks the honest rows' heterogeneity by about :math:`\sqrt{s}`, which is what lets a
robust aggregator downstream cope with non-i.i.d. workers.

Byzantine accounting (the registry's ``f_after``): ``f`` Byzantine rows land in at most ``f``
buckets, so the next stage must tolerate :math:`\min(f, m)` Byzantine rows among :math:`m`.
Its own bound then applies to :math:`m = \lceil n/s \rceil` (e.g. Krum downstream needs
:math:`\lceil n/s \rceil \ge 2f + 3`); the paper picks ``s`` so that :math:`\delta s` stays
below the aggregator's breakdown point. A NaN row makes its whole bucket NaN, which the next
stage drops as one Byzantine row.

Reference: S. P. Karimireddy, L. He, M. Jaggi, "Byzantine-Robust Learning on Heterogeneous
Datasets via Bucketing", ICLR 2022.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shieldwall.preaggregators import PREAGGREGATORS
from shieldwall.preaggregators._common import finite_rows

__all__ = ["bucketing"]


def _f_after(n: int, f: int, *, s: int = 2, **_) -> int:
    return min(f, math.ceil(n / s))


@PREAGGREGATORS.register("bucketing", aliases=("bucket",), f_after=_f_after)
def bucketing(
    updates: Tensor, f: int, *, s: int = 2, generator: torch.Generator | None = None
) -> Tensor:
    r"""Means of ``ceil(n / s)`` random buckets of ``s`` rows.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows (only checked: more than ``f`` non-finite rows raise).
        s: bucket size :math:`s \ge 1` (default 2); ``s = 1`` only shuffles the rows.
        generator: optional :class:`torch.Generator` for the permutation (its device is used
            to draw it); default: torch's global generator.

    Returns:
        ``(ceil(n / s), d)``. One pass over the rows (``index_add_``), no permuted copy.
    """
    finite_rows(updates, f, "Bucketing")
    if not isinstance(s, int) or s < 1:
        raise ValueError(f"Bucketing needs an integer bucket size s >= 1, got s={s!r}")
    n = updates.shape[0]
    m = math.ceil(n / s)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(n, generator=generator, device=draw_device).to(updates.device)
    bucket_of_row = torch.empty_like(perm)
    bucket_of_row[perm] = torch.arange(n, device=updates.device) // s
    sums = updates.new_zeros(m, updates.shape[1]).index_add_(0, bucket_of_row, updates)
    counts = torch.bincount(bucket_of_row, minlength=m).to(updates.dtype)
    return sums / counts[:, None]
