"""Random-noise attacks: pure Gaussian rows and noisy honest gradients (faulty workers).

* ``gaussian`` — every Byzantine row is drawn independently,
  :math:`b_j \\sim \\mathcal{N}(\\mu\\mathbf{1}, \\sigma^2 I_d)`, as the Gaussian attack of Blades
  (Li et al. 2023, "Blades: A unified benchmark suite for Byzantine attacks and defenses in
  federated learning") and ByzFL (``Gaussian``, mu = 0, sigma = 1). It ignores the honest updates.
* ``trivial_noise`` — a *faulty* rather than malicious worker: its own honest update plus noise,
  :math:`b_j = g_{j \\bmod h} + \\xi_j`, :math:`\\xi_j \\sim \\mathcal{N}(0, \\sigma^2 I_d)`
  (the "noise injection"/"Gaussian noise" fault of e.g. Xie et al. 2018, "Generalized Byzantine-
  tolerant SGD").

Both draw from ``ctx.generator`` only and need no other worker's update (``omniscient=False``).
"""

from __future__ import annotations

from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._utils import check_honest, own_rows, randn
from shieldwall.attacks.base import AttackContext

__all__ = ["gaussian", "trivial_noise"]


@ATTACKS.register(
    "gaussian",
    aliases=("gaussian_noise", "noise"),
    kind="update",
    omniscient=False,
    stochastic=True,
)
def gaussian(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    mu: float = 0.0,
    sigma: float = 1.0,
) -> Tensor:
    """Rows drawn i.i.d. from N(mu, sigma²) per coordinate.

    Args:
        honest: ``(h, d)``; only its shape, dtype and device are used.
        num_byzantine: rows to return.
        ctx: needs ``ctx.generator``.
        mu: mean of every coordinate (default 0).
        sigma: standard deviation of every coordinate (default 1).
    """
    check_honest(honest, num_byzantine, "gaussian")
    if sigma < 0:
        raise ValueError(f"gaussian: sigma must be >= 0, got {sigma}")
    noise = randn((num_byzantine, honest.shape[1]), ctx, honest, "gaussian")
    return noise * sigma + mu


@ATTACKS.register(
    "trivial_noise",
    aliases=("noise_injection", "faulty"),
    kind="update",
    omniscient=False,
    stochastic=True,
)
def trivial_noise(
    honest: Tensor, num_byzantine: int, ctx: AttackContext, *, sigma: float = 1.0
) -> Tensor:
    """The worker's own honest update plus N(0, sigma²) noise per coordinate.

    Args:
        honest: ``(h, d)``; Byzantine row ``i`` perturbs ``honest[i % h]``.
        num_byzantine: rows to return.
        ctx: needs ``ctx.generator``.
        sigma: noise standard deviation (default 1).
    """
    check_honest(honest, num_byzantine, "trivial_noise")
    if sigma < 0:
        raise ValueError(f"trivial_noise: sigma must be >= 0, got {sigma}")
    noise = randn((num_byzantine, honest.shape[1]), ctx, honest, "trivial_noise")
    return own_rows(honest, num_byzantine) + noise * sigma
