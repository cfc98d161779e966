"""FedML's ``byzantine`` attack modes, defined on model weights.

FedML replaces a Byzantine client's *weights* w; shieldwall moves updates u = w − w_global, so
each mode is written as the update that produces FedML's weights:

* ``zero``:   w = 0                      → u = −w_global
* ``random``: w ~ Uniform[−1, 1)          → u = w − w_global
* ``flip``:   w = 2·w_global − w_local    → u = −u_local
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks.base import AttackContext

__all__ = ["byzantine_zero", "byzantine_random", "byzantine_flip"]


def _reference(honest: Tensor, ctx: AttackContext) -> Tensor:
    if ctx.reference is None:
        return honest.new_zeros(honest.shape[1])
    return ctx.reference.to(dtype=honest.dtype, device=honest.device)


@ATTACKS.register("zero", aliases=("byzantine_zero",), kind="update")
def byzantine_zero(honest: Tensor, num_byzantine: int, ctx: AttackContext) -> Tensor:
    """FedML ``zero``: the Byzantine model's weights are all zero (u = −w_global)."""
    ref = _reference(honest, ctx)
    return (-ref).expand(num_byzantine, -1).clone()


@ATTACKS.register("random", aliases=("byzantine_random",), kind="update")
def byzantine_random(honest: Tensor, num_byzantine: int, ctx: AttackContext) -> Tensor:
    """FedML ``random``: weights drawn from Uniform[−1, 1) (u = w − w_global)."""
    ref = _reference(honest, ctx)
    weights = torch.rand(
        (num_byzantine, honest.shape[1]), generator=ctx.generator, dtype=honest.dtype
    ).to(honest.device)
    return weights * 2.0 - 1.0 - ref


@ATTACKS.register("flip", aliases=("byzantine_flip",), kind="update")
def byzantine_flip(honest: Tensor, num_byzantine: int, ctx: AttackContext) -> Tensor:
    """FedML ``flip``: w = 2·w_global − w_local, i.e. the update's sign flipped.

    Each Byzantine row flips one of ``honest`` (the attacker's own honest updates come first).
    """
    idx = torch.arange(num_byzantine, device=honest.device) % honest.shape[0]
    return -honest[idx]
