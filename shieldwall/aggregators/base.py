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

The shared numerical kernels (:func:`pairwise_sq_distances`, :func:`row_norms`,
:func:`columnwise`, :func:`mean_of_closest_sorted`, :class:`DistancesToPoint`, …) live in
:mod:`shieldwall.aggregators._kernels` and are re-exported here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from shieldwall.aggregators._kernels import (
    COLUMN_BLOCK_BYTES,
    DistancesToPoint,
    columnwise,
    mean_of_closest_sorted,
    pairwise_sq_distances,
    row_norms,
    sort_columns,
)

__all__ = [
    "AggregateResult",
    "check_updates",
    "check_f",
    "drop_nonfinite",
    "finite_row_mask",
    "nonfinite_safe",
    "nonfinite_safe_info",
    "pairwise_sq_distances",
    "row_norms",
    "mean_of_closest_sorted",
    "columnwise",
    "sort_columns",
    "DistancesToPoint",
    "COLUMN_BLOCK_BYTES",
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


def finite_row_mask(updates: Tensor) -> Tensor | None:
    """``None`` when every row is finite, else the boolean mask of finite rows.

    Fast path: a row whose sum is finite has only finite entries (NaN and Inf propagate through a
    sum), so one row-sum pass settles the common case; only rows whose sum is not finite (a
    NaN/Inf entry, or finite entries whose sum overflows) are checked entry by entry. Several
    times cheaper than ``isfinite(updates).all(dim=1)``, whose boolean reduction is slow.
    """
    suspect = ~torch.isfinite(updates.sum(dim=1))
    if not bool(suspect.any()):
        return None
    finite = torch.ones(updates.shape[0], dtype=torch.bool, device=updates.device)
    rows = suspect.nonzero().squeeze(1)
    finite[rows] = torch.isfinite(updates[rows]).all(dim=1)
    return None if bool(finite.all()) else finite


def drop_nonfinite(updates: Tensor, f: int) -> tuple[Tensor, int, Tensor | None]:
    """Remove rows containing NaN/Inf.

    Returns ``(kept_rows, f_left, kept_index)``; ``kept_index`` is ``None`` when every row is
    finite (the common case costs one ``isfinite`` pass and no copy).
    """
    finite = finite_row_mask(updates)
    if finite is None:
        return updates, f, None
    num_bad = int((~finite).sum())
    if num_bad > f:
        raise ValueError(
            f"{num_bad} of {updates.shape[0]} rows contain NaN/Inf but only f={f} Byzantine "
            "rows are tolerated; raise f or check the workers"
        )
    kept_index = finite.nonzero().squeeze(1)
    return updates[kept_index], f - num_bad, kept_index


def _subset_row_params(
    params: dict[str, Any], row_params: Sequence[str], kept_index: Tensor
) -> dict[str, Any]:
    """Index the per-row parameters (e.g. ``weights``) like the rows that were kept."""
    out = dict(params)
    for name in row_params:
        value = out.get(name)
        if value is not None:
            out[name] = torch.as_tensor(value, device=kept_index.device)[kept_index]
    return out


def nonfinite_safe(
    fn: Callable[..., Tensor] | None = None,
    *,
    check: Callable[..., None] | None = None,
    row_params: Sequence[str] = (),
):
    """Decorate a rule ``fn(updates, f, **params) -> Tensor`` with :func:`drop_nonfinite`.

    Usable bare (``@nonfinite_safe``) or with options (``@nonfinite_safe(check=...)``):

    Args:
        check: ``check(n, f, **params)`` run on the caller's ``n`` and ``f`` *before* rows are
            dropped, so that a configuration the rule cannot tolerate fails on every round and
            not only on rounds without NaN rows.
        row_params: names of per-row parameters (``weights``) to subset like the rows.
    """
    if fn is None:
        return functools.partial(nonfinite_safe, check=check, row_params=row_params)

    @functools.wraps(fn)
    def wrapper(updates: Tensor, f: int, **params) -> Tensor:
        check_updates(updates)
        if check is not None:
            check(updates.shape[0], f, **params)
        kept, f_left, kept_index = drop_nonfinite(updates, f)
        if kept_index is not None and row_params:
            params = _subset_row_params(params, row_params, kept_index)
        return fn(kept, f_left, **params)

    return wrapper


def nonfinite_safe_info(
    fn: Callable[..., AggregateResult] | None = None,
    *,
    check: Callable[..., None] | None = None,
    row_params: Sequence[str] = (),
):
    """Like :func:`nonfinite_safe` for ``info`` variants: indices are mapped back to the input."""
    if fn is None:
        return functools.partial(nonfinite_safe_info, check=check, row_params=row_params)

    @functools.wraps(fn)
    def wrapper(updates: Tensor, f: int, **params) -> AggregateResult:
        check_updates(updates)
        if check is not None:
            check(updates.shape[0], f, **params)
        kept, f_left, kept_index = drop_nonfinite(updates, f)
        if kept_index is not None and row_params:
            params = _subset_row_params(params, row_params, kept_index)
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
