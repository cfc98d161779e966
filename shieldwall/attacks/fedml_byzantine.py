"""FedML's ``byzantine`` attack modes, defined on model weights.

FedML (``fedml.core.security.attack.byzantine_attack``) replaces a Byzantine client's *weights*
w; shieldwall moves updates u = w − w_global, so each mode is written as the update that produces
FedML's weights:

* ``zero``:   w = 0                      → u = −w_global
* ``random``: w ~ Uniform[−1, 1)          → u = w − w_global
* ``flip``:   w = 2·w_global − w_local    → u = −u_local

FedML only overwrites "weight" entries of the state dict (not BatchNorm running statistics); the
flat vectors shieldwall moves hold the trainable parameters only, so every coordinate is attacked.
Older FedML releases drew ``random`` weights from Uniform[0, 1); the current one (followed here)
draws 2·Uniform[0, 1) − 1.

None of the three needs the other workers' updates (``omniscient=False``); without
``ctx.reference`` the global weights are taken as zero.
"""

from __future__ import annotations

from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._utils import check_honest, own_rows, rand
from shieldwall.attacks.base import AttackContext

__all__ = ["byzantine_zero", "byzantine_random", "byzantine_flip"]


def _reference(honest: Tensor, ctx: AttackContext) -> Tensor:
    if ctx.reference is None:
        return honest.new_zeros(honest.shape[1])
    ref = ctx.reference.reshape(-1)
    if ref.numel() != honest.shape[1]:
        raise ValueError(
            f"ctx.reference has {ref.numel()} entries but updates have d={honest.shape[1]}"
        )
    return ref.to(dtype=honest.dtype, device=honest.device)


@ATTACKS.register("zero", aliases=("byzantine_zero",), kind="update", omniscient=False)
def byzantine_zero(honest: Tensor, num_byzantine: int, ctx: AttackContext) -> Tensor:
    """FedML ``zero``: the Byzantine model's weights are all zero (u = −w_global)."""
    check_honest(honest, num_byzantine, "zero")
    ref = _reference(honest, ctx)
    return (-ref).expand(num_byzantine, -1).clone()


@ATTACKS.register(
    "random", aliases=("byzantine_random",), kind="update", omniscient=False, stochastic=True
)
def byzantine_random(honest: Tensor, num_byzantine: int, ctx: AttackContext) -> Tensor:
    """FedML ``random``: weights drawn from Uniform[−1, 1) (u = w − w_global).

    Draws from ``ctx.generator`` only (required).
    """
    check_honest(honest, num_byzantine, "random")
    ref = _reference(honest, ctx)
    weights = rand((num_byzantine, honest.shape[1]), ctx, honest, "random")
    return weights * 2.0 - 1.0 - ref


@ATTACKS.register("flip", aliases=("byzantine_flip",), kind="update", omniscient=False)
def byzantine_flip(honest: Tensor, num_byzantine: int, ctx: AttackContext) -> Tensor:
    """FedML ``flip``: w = 2·w_global − w_local, i.e. the update's sign flipped.

    Each Byzantine row flips one of ``honest`` (row ``i % h``: the attacker's own honest updates
    come first).
    """
    check_honest(honest, num_byzantine, "flip")
    return -own_rows(honest, num_byzantine)
