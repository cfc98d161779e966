"""The aggregator contract and what every rule shares.

An aggregator is ``fn(updates: Tensor[n, d], f: int, **params) -> Tensor[d]``: ``updates`` holds
one row per worker (honest or not: a rule never knows which), ``f`` is the number of Byzantine
rows it must tolerate. Rules keep dtype and device and never modify ``updates`` in place.

Rules that also know *which* rows they chose (Krum, Multi-Krum, Bulyan, …) register an
``info`` variant returning :class:`AggregateResult`, so that callers (metrics) get the selection
from the same computation instead of computing twice.

Non-finite rows (NaN/Inf) can only come from Byzantine workers: :func:`drop_nonfinite` removes
them before a rule runs (each one spends one unit of ``f``), and raises when there are more than
``f`` of them, since then no rule can promise anything.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "AggregateResult",
    "check_updates",
    "check_f",
    "drop_nonfinite",
    "nonfinite_safe",
    "nonfinite_safe_info",
]


@dataclass
class AggregateResult:
    """What a rule returns when asked for more than the vector.

    Attributes:
        vector: the aggregate, shape ``(d,)``.
        selected: indices (into the caller's rows) that the rule kept, or ``None``.
        scores: one score per input row (e.g. Krum scores; ``inf`` for dropped rows), or ``None``.
    """

    vector: Tensor
    selected: Tensor | None = None
    scores: Tensor | None = None


def check_updates(updates: Tensor, name: str = "updates") -> None:
    """Raise ``ValueError`` unless ``updates`` is a floating ``(n, d)`` tensor with n ≥ 1."""
    if not isinstance(updates, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(updates).__name__}")
    if updates.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d), got {tuple(updates.shape)}")
    if updates.shape[0] < 1:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {updates.dtype}")


def check_f(rule: str, n: int, f: int, *, min_n: int | None = None, bound: str = "") -> None:
    """Raise ``ValueError`` naming the rule, n, f and the bound when ``n < min_n`` or ``f < 0``."""
    if f < 0:
        raise ValueError(f"{rule} needs f >= 0, got f={f}")
    if min_n is not None and n < min_n:
        raise ValueError(f"{rule} needs {bound or f'n >= {min_n}'}, got n={n}, f={f}")


def drop_nonfinite(updates: Tensor, f: int) -> tuple[Tensor, int, Tensor | None]:
    """Remove rows containing NaN/Inf.

    Returns ``(kept_rows, f_left, kept_index)``; ``kept_index`` is ``None`` when every row is
    finite (the common case costs one ``isfinite`` pass and no copy).
    """
    finite = torch.isfinite(updates).all(dim=1)
    if bool(finite.all()):
        return updates, f, None
    num_bad = int((~finite).sum())
    if num_bad > f:
        raise ValueError(
            f"{num_bad} of {updates.shape[0]} rows contain NaN/Inf but only f={f} Byzantine "
            "rows are tolerated; raise f or check the workers"
        )
    kept_index = finite.nonzero().squeeze(1)
    return updates[kept_index], f - num_bad, kept_index


def nonfinite_safe(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Decorate a rule ``fn(updates, f, **params) -> Tensor`` with :func:`drop_nonfinite`."""

    @functools.wraps(fn)
    def wrapper(updates: Tensor, f: int, **params) -> Tensor:
        check_updates(updates)
        kept, f_left, _ = drop_nonfinite(updates, f)
        return fn(kept, f_left, **params)

    return wrapper


def nonfinite_safe_info(fn: Callable[..., AggregateResult]) -> Callable[..., AggregateResult]:
    """Like :func:`nonfinite_safe` for ``info`` variants: indices are mapped back to the input."""

    @functools.wraps(fn)
    def wrapper(updates: Tensor, f: int, **params) -> AggregateResult:
        check_updates(updates)
        kept, f_left, kept_index = drop_nonfinite(updates, f)
        result = fn(kept, f_left, **params)
        if kept_index is None:
            return result
        selected = None if result.selected is None else kept_index[result.selected]
        scores = None
        if result.scores is not None:
            scores = result.scores.new_full((updates.shape[0],), float("inf"))
            scores[kept_index] = result.scores
        return AggregateResult(result.vector, selected, scores)

    return wrapper
