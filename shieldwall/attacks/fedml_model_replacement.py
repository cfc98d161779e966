r"""Model replacement (FedML's ``model_replacement``): the attacker scales its update by γ.

Bagdasaryan, Veit, Hua, Estrin, Shmatikov (2020), "How To Backdoor Federated Learning",
AISTATS. The attacker submits

.. math::
    \tilde L = \gamma\,(L - G) + G, \qquad\text{i.e. the update } \gamma\,\Delta,

so that, averaged with the other participants' updates, the new global model is (close to) its
own model :math:`L`. With FedAvg's :math:`G' = G + \tfrac{\eta}{n}\sum_i \Delta_i` full replacement
needs :math:`\gamma = n / \eta` (n participants, η = ``server_lr``). *Train-and-scale* bounds the
boost to evade norm-based detection: :math:`\gamma = S / \lVert L - G\rVert`, so the submitted
update has norm exactly S (``scale_factor_S``).

The attacker's Δ is the update it computed honestly on its own data: like FedML's
implementation, no backdoor trigger is added here (combine with a backdoored data set to plant
one). Needs only its own update (``omniscient=False``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._utils import check_honest, own_rows
from shieldwall.attacks.base import AttackContext

__all__ = ["model_replacement"]


def model_replacement(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    scale_factor_S: float | None = None,
    gamma: float | None = None,
    server_lr: float = 1.0,
) -> Tensor:
    """Each Byzantine row is its own honest update scaled by γ.

    γ is ``scale_factor_S / ‖Δ‖`` when ``scale_factor_S`` is given, else ``gamma``, else
    ``ctx.n / server_lr`` (full replacement).

    Args:
        honest: ``(h, d)`` rows; the attackers' own updates come first.
        num_byzantine: rows to return.
        ctx: ``ctx.n`` is the number of participants this round.
        scale_factor_S: S, the norm of the submitted update (train-and-scale).
        gamma: an explicit boost factor.
        server_lr: η of FedAvg's server step.

    >>> ctx = AttackContext(n=4, f=1)
    >>> model_replacement(torch.tensor([[0.5, -1.0]]), 1, ctx).tolist()
    [[2.0, -4.0]]
    """
    check_honest(honest, num_byzantine, "model_replacement")
    if server_lr <= 0:
        raise ValueError(f"model_replacement: server_lr must be > 0, got {server_lr}")
    own = own_rows(honest, num_byzantine)
    if scale_factor_S is not None:
        if scale_factor_S <= 0:
            raise ValueError(f"model_replacement: scale_factor_S must be > 0, got {scale_factor_S}")
        norms = torch.linalg.vector_norm(own, dim=1, keepdim=True)
        return own * (scale_factor_S / norms.clamp_min(torch.finfo(own.dtype).tiny))
    factor = gamma if gamma is not None else ctx.n / server_lr
    return own * factor


ATTACKS.add(
    "model_replacement", model_replacement,
    aliases=("model_replacement_backdoor", "backdoor_model_replacement", "boosting"),
    kind="update", omniscient=False,
)
