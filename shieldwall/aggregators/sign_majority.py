r"""Sign majority vote (signSGD with majority vote).

.. math::
    \mathrm{SignMajority}(x_1, \dots, x_n)
        = \mathrm{sign}\Bigl(\sum_{i=1}^n \mathrm{sign}(x_i)\Bigr)

Each worker votes the sign of every coordinate; the result is the majority sign, ``0`` on a tie
or where every vote is ``0``. Output values are in :math:`\{-1, 0, 1\}` (the server applies its
own step size). Invariant under positive scaling of the rows, not translation-equivariant.

Fault tolerance: a coordinate's vote flips only if the Byzantine rows outnumber the honest
majority margin; the paper's guarantee assumes fewer than half the workers are adversarial, so
:math:`n \ge 2f + 1` is required here.

Reference: J. Bernstein, J. Zhao, K. Azizzadenesheli, A. Anandkumar, "signSGD with Majority Vote
is Communication Efficient and Fault Tolerant", ICLR 2019.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS
from shieldwall.aggregators.base import check_f, nonfinite_safe

__all__ = ["sign_majority"]


def _check(n: int, f: int, **_) -> None:
    check_f("SignMajority", n, f, min_n=2 * f + 1, bound="n >= 2f + 1")


@AGGREGATORS.register(
    "sign_majority",
    aliases=("signsgd", "sign_sgd", "majority_vote"),
    min_n=lambda f, **_: 2 * f + 1,
)
@nonfinite_safe(check=_check)
def sign_majority(updates: Tensor, f: int) -> Tensor:
    r"""Coordinate-wise majority of the rows' signs.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated; needs :math:`n \ge 2f + 1`. Rows with NaN/Inf
            are dropped first, each one spending one unit of ``f``.

    Returns:
        ``(d,)`` with values in ``{-1, 0, 1}``, in the input's dtype.
    """
    # Votes are summed in float32 (float64 for float64 rows): exact integers for n < 2**24, and
    # much faster than counting booleans.
    acc = torch.float64 if updates.dtype == torch.float64 else torch.float32
    return updates.sign().sum(dim=0, dtype=acc).sign().to(updates.dtype)
