r"""Constant and random direction: a gradient of the honest size along an attacker's direction.

The direction attacks of BTARD's experiments (Gorbunov et al. 2022, Sec. 4), as update attacks
for the server-side algorithms (the BTARD driver has its own, :mod:`shieldwall.btard.byzantine`,
drawn from the run's seed):

.. math::
    b_j = s \, \lVert g_{j \bmod h} \rVert \, \frac{u}{\lVert u \rVert}, \qquad u \sim N(0, I_d),

with the attacker's own honest gradient :math:`g` and scale :math:`s` (the authors use 1000).
``constant_direction`` draws :math:`u` once, from ``seed``, so every attacker pushes along the
same direction in every round; ``random_direction`` draws a fresh :math:`u` per round from the
attack's generator (one direction shared by the round's attackers).
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._utils import check_honest, own_rows, require_generator
from shieldwall.attacks.base import AttackContext

__all__ = ["constant_direction", "random_direction"]


def _along(honest: Tensor, num_byzantine: int, u: Tensor, scale: float) -> Tensor:
    own = own_rows(honest, num_byzantine)
    norms = own.norm(dim=1, keepdim=True)
    unit = (u / u.norm()).to(honest.dtype).to(honest.device)
    return scale * norms * unit


@ATTACKS.register("constant_direction", aliases=("const_direction",), kind="update",
                  omniscient=False)
def constant_direction(
    honest: Tensor, num_byzantine: int, ctx: AttackContext, *, scale: float = 1000.0,
    seed: int = 0,
) -> Tensor:
    """``scale · ‖g‖ · u/‖u‖`` with one fixed ``u`` drawn from ``seed`` (see module docstring)."""
    check_honest(honest, num_byzantine, "constant_direction")
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.randn(honest.shape[1], generator=gen, dtype=torch.float64)
    return _along(honest, num_byzantine, u, float(scale))


@ATTACKS.register("random_direction", aliases=("rand_direction",), kind="update",
                  omniscient=False, stochastic=True)
def random_direction(
    honest: Tensor, num_byzantine: int, ctx: AttackContext, *, scale: float = 1000.0
) -> Tensor:
    """``scale · ‖g‖ · u/‖u‖`` with a fresh ``u`` each round from ``ctx.generator``."""
    check_honest(honest, num_byzantine, "random_direction")
    gen = require_generator(ctx, "random_direction")
    u = torch.randn(honest.shape[1], generator=gen, dtype=torch.float64)
    return _along(honest, num_byzantine, u, float(scale))
