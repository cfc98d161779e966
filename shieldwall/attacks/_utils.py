"""Helpers shared by the attack modules (input checks, seeded noise, per-coordinate statistics).

Private: not an attack family, so :func:`shieldwall.registry.import_submodules` skips it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.attacks.base import AttackContext

__all__ = [
    "check_honest",
    "own_rows",
    "require_generator",
    "randn",
    "rand",
    "coordinate_std",
    "repeat_row",
]


def check_honest(honest: Tensor, num_byzantine: int, attack: str, *, min_rows: int = 1) -> None:
    """Raise unless ``honest`` is a floating ``(h, d)`` tensor with ``h >= min_rows``.

    Also checks ``num_byzantine >= 0`` (zero is allowed and yields a ``(0, d)`` result).
    """
    if not isinstance(honest, Tensor):
        raise TypeError(f"{attack}: honest must be a torch.Tensor, got {type(honest).__name__}")
    if honest.dim() != 2:
        raise ValueError(f"{attack}: honest must have shape (h, d), got {tuple(honest.shape)}")
    if not honest.is_floating_point():
        raise ValueError(f"{attack}: honest must be a floating tensor, got {honest.dtype}")
    if honest.shape[0] < min_rows:
        raise ValueError(f"{attack} needs at least {min_rows} honest row(s), got {honest.shape[0]}")
    if num_byzantine < 0:
        raise ValueError(f"{attack}: num_byzantine must be >= 0, got {num_byzantine}")


def own_rows(honest: Tensor, num_byzantine: int) -> Tensor:
    """Row ``i % h`` of ``honest`` for each Byzantine row ``i`` (a new tensor).

    The caller puts the Byzantine workers' own honest updates first, so Byzantine worker ``i``
    gets its own honest update whenever ``honest`` holds at least ``num_byzantine`` rows.
    """
    idx = torch.arange(num_byzantine, device=honest.device) % honest.shape[0]
    return honest[idx]


def require_generator(ctx: AttackContext, attack: str) -> torch.Generator:
    """``ctx.generator``, or ``ValueError`` when it is missing.

    Attacks never fall back to the global RNG: that would perturb the honest workers' randomness
    and make runs depend on the order in which components draw numbers.
    """
    if ctx.generator is None:
        raise ValueError(
            f"attack {attack!r} is random and needs ctx.generator (a seeded torch.Generator); "
            "the global RNG is never used"
        )
    return ctx.generator


def _draw_dtype(dtype: torch.dtype) -> torch.dtype:
    # Draw in float32 (float64 for float64 inputs) so that the same seed gives the same numbers
    # whatever the (low) precision of the updates, then cast.
    return torch.float64 if dtype == torch.float64 else torch.float32


def randn(shape: tuple[int, ...], ctx: AttackContext, like: Tensor, attack: str) -> Tensor:
    """Standard normal draws from ``ctx.generator`` with ``like``'s dtype and device."""
    gen = require_generator(ctx, attack)
    out = torch.randn(shape, generator=gen, device=gen.device, dtype=_draw_dtype(like.dtype))
    return out.to(dtype=like.dtype, device=like.device)


def rand(shape: tuple[int, ...], ctx: AttackContext, like: Tensor, attack: str) -> Tensor:
    """Uniform ``[0, 1)`` draws from ``ctx.generator`` with ``like``'s dtype and device."""
    gen = require_generator(ctx, attack)
    out = torch.rand(shape, generator=gen, device=gen.device, dtype=_draw_dtype(like.dtype))
    return out.to(dtype=like.dtype, device=like.device)


def coordinate_std(rows: Tensor) -> Tensor:
    """Per-coordinate standard deviation over rows.

    Unbiased (divides by ``h − 1``, ``torch.std``'s default, as the reference implementations of
    ALIE and Min-Max/Min-Sum do); with a single row the spread is 0 rather than NaN.
    """
    if rows.shape[0] < 2:
        return torch.zeros_like(rows[0])
    # two passes (mean, then squared deviations) over the contiguous rows: ~8x faster on the CPU
    # than ``rows.std(dim=0)``, which reduces across rows with a strided Welford loop
    centred = rows - rows.mean(dim=0)
    return (centred.square().sum(dim=0) / (rows.shape[0] - 1)).sqrt()


def repeat_row(row: Tensor, num_byzantine: int) -> Tensor:
    """``num_byzantine`` copies of ``row`` as a new ``(num_byzantine, d)`` tensor."""
    return row.unsqueeze(0).expand(num_byzantine, -1).clone()
