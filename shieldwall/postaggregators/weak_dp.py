r"""Weak differential privacy: Gaussian noise on the aggregated global model.

Sun, Kairouz, Suresh, McMahan (2019), "Can You Really Backdoor Federated Learning?": the server
clips each update to norm M (the ``norm_diff_clipping`` pre-aggregation step) and adds Gaussian
noise to the new global model,

.. math::
    \theta_{t+1} = \theta_t + \eta\,\mathrm{AGG}(\Delta) + \mathcal{N}(0, \sigma^2 I).

"Weak" because σ is far below what a formal (ε, δ) guarantee needs; it blunts backdoors at a small
accuracy cost. In update space the step adds :math:`\mathcal{N}(0, \sigma^2 I) / \eta` to the
aggregate, so the model receives noise of standard deviation exactly σ.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.postaggregators import POSTAGGREGATORS
from shieldwall.postaggregators._model import check_aggregate, gaussian_like

__all__ = ["weak_dp"]


@POSTAGGREGATORS.register("weak_dp", aliases=("weakdp", "gaussian_model_noise"))
def weak_dp(
    aggregate: Tensor,
    *,
    reference: Tensor | None = None,
    generator: torch.Generator | None = None,
    round: int = 0,
    stddev: float,
    server_lr: float = 1.0,
) -> Tensor:
    """``aggregate + N(0, stddev²) / server_lr`` (the model moves by noise of std ``stddev``).

    Args:
        aggregate: aggregated update ``(d,)``.
        reference: unused (the noise does not depend on the model).
        generator: seeded RNG of the noise (required when ``stddev > 0``).
        round: unused.
        stddev: σ of the noise added to the global model (FedML's ``stddev``).
        server_lr: η of ``θ_{t+1} = θ_t + η · agg``.
    """
    del reference, round
    check_aggregate(aggregate, "weak_dp")
    if stddev < 0:
        raise ValueError(f"weak_dp: stddev must be >= 0, got {stddev}")
    if server_lr <= 0:
        raise ValueError(f"weak_dp: server_lr must be > 0, got {server_lr}")
    if stddev == 0:
        return aggregate.clone()
    return aggregate + gaussian_like(aggregate, stddev, generator, "weak_dp") / server_lr
