"""Pixel-pattern backdoor: a data attack run inside a Byzantine worker's local training.

A cheap BadNets-style trigger (Gu et al. 2017, "BadNets: Identifying vulnerabilities in the
machine learning model supply chain"; used against federated learning by Bagdasaryan et al. 2020
and, with ALIE, by Baruch et al. 2019): in a seeded fraction ``poison_fraction`` of the batch,
set a ``trigger_size × trigger_size`` square in the bottom-right corner of every channel to
``trigger_value`` and relabel the sample ``target_label``. At test time the trigger alone should
make the model answer ``target_label``; :func:`add_trigger` applies it to a whole test batch.

Layouts: ``(B, C, H, W)`` and ``(B, H, W)`` get the square in the last two dims; flat features
``(B, F)`` get their last ``trigger_size²`` entries set. ``trigger_value=None`` means the batch's
maximum (data are standardised, so "white" is not 1.0). The poisoned rows are
``⌊poison_fraction · B + ½⌋`` rows chosen without replacement by ``ctx.generator`` (needed unless
that count is 0 or B). Inputs are never modified: new ``x`` and ``y`` are returned.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._utils import require_generator
from shieldwall.attacks.base import AttackContext

__all__ = ["backdoor", "add_trigger"]


def _trigger_value(x: Tensor, trigger_value: float | None) -> float:
    if trigger_value is not None:
        return float(trigger_value)
    return float(x.max()) if x.numel() else 1.0


def add_trigger(x: Tensor, *, trigger_size: int = 2, trigger_value: float | None = None) -> Tensor:
    """A copy of ``x`` with the trigger stamped on every sample (for measuring the backdoor)."""
    if trigger_size < 1:
        raise ValueError(f"backdoor: trigger_size must be >= 1, got {trigger_size}")
    if x.dim() < 2:
        raise ValueError(f"backdoor: x must be batched (B, ...), got shape {tuple(x.shape)}")
    value = _trigger_value(x, trigger_value)
    out = x.clone()
    if x.dim() == 2:
        out[:, -trigger_size * trigger_size :] = value
    else:
        out[..., -trigger_size:, -trigger_size:] = value
    return out


@ATTACKS.register(
    "backdoor",
    aliases=("pixel_backdoor", "badnets"),
    kind="data",
    omniscient=False,
    stochastic=True,
)
def backdoor(
    x: Tensor,
    y: Tensor,
    ctx: AttackContext,
    *,
    target_label: int = 0,
    poison_fraction: float = 0.5,
    trigger_size: int = 2,
    trigger_value: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Stamp the trigger on a seeded fraction of the batch and relabel it ``target_label``.

    Args:
        x: ``(B, C, H, W)``, ``(B, H, W)`` or ``(B, F)`` inputs.
        y: ``(B,)`` integer labels.
        ctx: ``ctx.generator`` chooses the poisoned rows.
        target_label: the label the trigger should produce (default 0).
        poison_fraction: fraction of the batch poisoned, in [0, 1] (default 0.5).
        trigger_size: side of the square trigger in pixels (default 2, for 8×8 digits).
        trigger_value: pixel value of the trigger; ``None`` → the batch's maximum.
    """
    if not 0.0 <= poison_fraction <= 1.0:
        raise ValueError(f"backdoor: poison_fraction must be in [0, 1], got {poison_fraction}")
    if y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"backdoor: need x (B, ...) and y (B,), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if ctx.num_classes is not None and not 0 <= target_label < ctx.num_classes:
        raise ValueError(f"backdoor: target_label {target_label} outside [0, {ctx.num_classes})")
    batch = y.shape[0]
    count = math.floor(poison_fraction * batch + 0.5)
    if count == 0:
        return x.clone(), y.clone()
    if count == batch:
        rows = torch.arange(batch, device=x.device)
    else:
        gen = require_generator(ctx, "backdoor")
        rows = torch.randperm(batch, generator=gen, device=gen.device)[:count].to(x.device)
    stamped = add_trigger(
        x[rows], trigger_size=trigger_size, trigger_value=_trigger_value(x, trigger_value)
    )
    new_x, new_y = x.clone(), y.clone()
    new_x[rows] = stamped
    new_y[rows.to(y.device)] = target_label
    return new_x, new_y
