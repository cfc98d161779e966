"""Malformed messages: NaN, infinite and astronomically large updates.

These are not clever attacks but the failures a robust system must survive (a crashed or buggy
worker, an overflow): every coordinate NaN (``nan``), every coordinate ±∞ (``inf``), or a finite
row of Euclidean norm ``norm`` (default 10³⁰, ``huge``) pointing against the worker's own honest
update, :math:`b = -\\text{norm} \\cdot g / \\lVert g \\rVert` (along :math:`-\\mathbf{1}/\\sqrt d`
when g = 0). A norm of 10³⁰ is finite in float32 (max ≈ 3.4·10³⁸) but its square is not, so
distance-based rules see ``inf`` distances; in float16/bfloat16 it overflows to ``inf`` anyway.

None of them needs other workers' updates (``omniscient=False``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._utils import check_honest, own_rows
from shieldwall.attacks.base import AttackContext

__all__ = ["nan_attack", "inf_attack", "huge"]


@ATTACKS.register("nan", aliases=("nan_attack",), kind="update", omniscient=False)
def nan_attack(honest: Tensor, num_byzantine: int, ctx: AttackContext) -> Tensor:
    """Every coordinate NaN."""
    check_honest(honest, num_byzantine, "nan")
    return honest.new_full((num_byzantine, honest.shape[1]), float("nan"))


@ATTACKS.register("inf", aliases=("inf_attack", "infinity"), kind="update", omniscient=False)
def inf_attack(
    honest: Tensor, num_byzantine: int, ctx: AttackContext, *, negative: bool = False
) -> Tensor:
    """Every coordinate +∞ (−∞ with ``negative=True``)."""
    check_honest(honest, num_byzantine, "inf")
    value = -math.inf if negative else math.inf
    return honest.new_full((num_byzantine, honest.shape[1]), value)


@ATTACKS.register("huge", aliases=("large", "huge_norm"), kind="update", omniscient=False)
def huge(honest: Tensor, num_byzantine: int, ctx: AttackContext, *, norm: float = 1e30) -> Tensor:
    """A row of Euclidean norm ``norm`` opposite to the worker's own honest update.

    Computed in float64 and cast, so the row's norm is ``norm`` up to the dtype's rounding (or
    ``inf`` when ``norm`` exceeds the dtype's range).

    Args:
        honest: ``(h, d)``, the attacker's own honest updates first.
        num_byzantine: rows to return.
        ctx: unused.
        norm: the Euclidean norm of each row (default 1e30).
    """
    check_honest(honest, num_byzantine, "huge")
    d = honest.shape[1]
    own = own_rows(honest, num_byzantine).to(torch.float64)
    lengths = own.norm(dim=1, keepdim=True)
    fallback = own.new_full((1, d), 1.0 / math.sqrt(d))
    direction = torch.where(lengths > 0, own / lengths.clamp_min(1e-300), fallback)
    return (-norm * direction).to(honest.dtype)
