r"""SLSGD: trimmed mean of the local models, mixed with the previous global model.

Xie, Koyejo, Gupta (2019), "SLSGD: Secure and Efficient Distributed On-device Machine Learning",
ECML-PKDD. The server updates the global model :math:`x_{t-1}` with the local models
:math:`x_{t,i}`:

.. math::
    x_t = (1-\alpha)\, x_{t-1} + \alpha\, \mathrm{Trmean}_b\bigl(\{x_{t,i}\}\bigr),

where option I uses the plain mean (:math:`b = 0`) and option II the coordinate-wise trimmed mean
that drops the b largest and b smallest values of every coordinate. The trimmed mean commutes
with translation, :math:`\mathrm{Trmean}_b(\{x_{t-1} + \Delta_i\}) = x_{t-1} +
\mathrm{Trmean}_b(\{\Delta_i\})`, so in update space (what shieldwall's FedAvg moves) the rule is

.. math::
    x_t - x_{t-1} = \alpha\, \mathrm{Trmean}_b(\{\Delta_i\}),

and the previous global model need not be stored: the moving average's state *is* the global
model the server already holds. With gradient updates (PS-SGD) the same formula scales the step.
"""

from __future__ import annotations

import math

from torch import Tensor

from shieldwall.aggregators import AGGREGATORS
from shieldwall.aggregators.base import check_updates

__all__ = ["slsgd", "coordinate_trimmed_mean"]


def coordinate_trimmed_mean(updates: Tensor, b: int) -> Tensor:
    """Mean over rows of every coordinate after dropping its ``b`` largest and ``b`` smallest."""
    n = updates.shape[0]
    if b == 0:
        return updates.mean(dim=0)
    ordered = updates.sort(dim=0).values
    return ordered[b : n - b].mean(dim=0)


def slsgd(
    updates: Tensor,
    f: int = 0,
    *,
    trim_param_b: int = 0,
    alpha: float = 1.0,
    option_type: int = 2,
) -> Tensor:
    """``alpha · Trmean_b(updates)`` (option 1: b = 0, the plain mean).

    Args:
        updates: ``(n, d)`` rows.
        f: ignored (b is SLSGD's own parameter).
        trim_param_b: b, values dropped at each end of every coordinate; ``0 <= b <= ⌈n/2⌉ − 1``.
        alpha: α ∈ [0, 1], the weight of the new models (1: no mixing with the old model).
        option_type: 1 (mean) or 2 (trimmed mean).

    >>> import torch
    >>> slsgd(torch.tensor([[1.0], [2.0], [3.0], [100.0]]), trim_param_b=1, alpha=0.5).tolist()
    [1.25]
    """
    check_updates(updates)
    n = updates.shape[0]
    if option_type not in (1, 2):
        raise ValueError(f"slsgd: option_type must be 1 or 2, got {option_type}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"slsgd: alpha must be in [0, 1], got {alpha}")
    b = int(trim_param_b) if option_type == 2 else 0
    bound = math.ceil(n / 2) - 1
    if not 0 <= b <= bound:
        raise ValueError(
            f"slsgd needs 0 <= trim_param_b <= ceil(n/2) - 1 = {bound}, got b={b}, n={n}"
        )
    return alpha * coordinate_trimmed_mean(updates, b)


AGGREGATORS.add("slsgd", slsgd, aliases=("sl_sgd",), robust=True)
