r"""Robust learning rate: flip the server's step on coordinates where clients' signs disagree.

Ozdayi, Kantarcioglu, Gel (2021), "Defending against Backdoors in Federated Learning with Robust
Learning Rate", AAAI. For every coordinate j the server counts how many clients agree on the
update's sign; below the threshold θ the learning rate of that coordinate becomes −η:

.. math::
    \eta_j = \begin{cases} \eta & \bigl|\sum_i \operatorname{sgn}(\Delta_{i,j})\bigr| \ge \theta
    \\ -\eta & \text{otherwise} \end{cases},\qquad
    \mathrm{AGG} = \eta \odot \frac{\sum_i n_i \Delta_i}{\sum_i n_i}

with :math:`n_i` the clients' sample counts (``weights``; uniform without them) and η = 1 here:
FedAvg's ``server_lr`` multiplies the result afterwards. A backdoor needs coordinates that few
clients push; on those the step is reversed. θ = 0 is plain FedAvg. The rule has no state across
rounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS
from shieldwall.aggregators.base import check_updates

__all__ = ["robust_learning_rate"]


def robust_learning_rate(
    updates: Tensor,
    f: int = 0,
    *,
    robust_threshold: float,
    weights: Tensor | None = None,
) -> Tensor:
    """Sample-weighted mean with the sign of each coordinate set by the sign-agreement vote.

    Args:
        updates: ``(n, d)`` rows.
        f: ignored.
        robust_threshold: θ >= 0, agreement needed to keep a coordinate's step (above n every
            coordinate is reversed).
        weights: ``(n,)`` sample counts (``None``: uniform).

    >>> rows = torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.0, 2.0]])
    >>> robust_learning_rate(rows, robust_threshold=2).tolist()
    [1.0, -0.6666666865348816]
    """
    check_updates(updates)
    if robust_threshold < 0:
        raise ValueError(
            f"robust_learning_rate needs robust_threshold >= 0, got {robust_threshold}"
        )
    if weights is None:
        mean = updates.mean(dim=0)
    else:
        w = weights.to(dtype=updates.dtype, device=updates.device)
        mean = (w @ updates) / w.sum()
    agreement = torch.sign(updates).sum(dim=0).abs()
    lr = torch.where(agreement >= robust_threshold, 1.0, -1.0).to(updates.dtype)
    return lr * mean


AGGREGATORS.add("robust_learning_rate", robust_learning_rate, aliases=("rlr",), robust=True)
