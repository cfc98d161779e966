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

Shared kernels live here too: :func:`pairwise_sq_distances` (one Gram matrix, never an
``(n, n, d)`` temporary), :func:`row_norms` (overflow-safe) and :func:`mean_of_closest_sorted`
(per coordinate mean of the k values nearest to a centre, from column-sorted values).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

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


def pairwise_sq_distances(x: Tensor) -> Tensor:
    r"""``(n, n)`` squared Euclidean distances from one Gram matrix.

    .. math::
        D_{ij} = \max\bigl(0,\ \|x_i\|^2 + \|x_j\|^2 - 2\, x_i^\top x_j\bigr), \qquad D_{ii} = 0

    One ``x @ x.T`` (the squared norms are its diagonal); no ``(n, n, d)`` temporary. The result
    is exactly symmetric. Computed in
    float32 for half/bfloat16 inputs, else in the input's dtype. Entries whose terms overflow
    (rows of huge norm, e.g. ``1e30`` in float32) come out ``+inf``, never NaN, so such rows are
    simply "far from everything". Like every Gram-based distance (``torch.cdist``'s matmul path)
    it loses relative precision when the rows share an offset much larger than their spread.
    """
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    gram = work @ work.T
    sq = gram.diagonal()
    d2 = sq[:, None] + sq[None, :]
    d2.sub_(gram, alpha=2.0)
    d2.masked_fill_(torch.isnan(d2), float("inf")).clamp_(min=0.0)
    # Exactly symmetric (a GEMM need not be), so that D[i, j] == D[j, i] ties stay ties.
    d2 = d2.add_(d2.T.clone()).mul_(0.5)
    d2.fill_diagonal_(0.0)
    return d2


def row_norms(x: Tensor) -> Tensor:
    """Euclidean norm of each row as float64, without overflow or underflow for float32 rows.

    Computed in the input's precision (float32 for half/bfloat16); rows whose norm comes out
    ``inf`` or ``0`` there (entries of ``1e30`` or ``1e-30`` in float32) are recomputed in
    float64. Rows with NaN give NaN, rows with Inf give Inf.
    """
    if x.dtype == torch.float64:
        return torch.linalg.vector_norm(x, dim=1)
    norms = torch.linalg.vector_norm(x, dim=1, dtype=torch.float32).double()
    redo = ~torch.isfinite(norms) | (norms == 0)
    if bool(redo.any()):
        rows = redo.nonzero().squeeze(1)
        norms[rows] = torch.linalg.vector_norm(x[rows], dim=1, dtype=torch.float64)
    return norms


COLUMN_BLOCK_BYTES = 32 << 20


def columnwise(
    fn: Callable[..., Tensor], x: Tensor, *columns: Tensor, block_bytes: int | None = None
) -> Tensor:
    """``fn(x[:, block], *(c[block] for c in columns))`` over blocks of columns, concatenated.

    For coordinate-wise rules whose work along dim 0 needs ``(n, d)``-sized temporaries (sorts,
    masks): on the CPU, blocks of about ``block_bytes`` keep those temporaries small (sorting
    contiguous blocks is 15-25% faster than one whole-matrix sort, and the peak extra memory is a
    few blocks instead of about three times the input). A loop over blocks of columns, not over
    coordinates: about ``n * d * itemsize / block_bytes`` iterations (default: the module's
    ``COLUMN_BLOCK_BYTES``, 32 MiB: smaller blocks are a little faster on dedicated cores, but
    every block costs a few fork/joins of torch's thread pool, which is slow on a busy machine).
    On other devices ``fn`` sees the whole matrix.
    """
    if block_bytes is None:
        block_bytes = COLUMN_BLOCK_BYTES
    n, d = x.shape
    width = max(1, block_bytes // max(1, n * x.element_size()))
    if x.device.type != "cpu" or width >= d:
        return fn(x, *columns)
    out = None
    for start in range(0, d, width):
        part = fn(x[:, start : start + width], *(c[start : start + width] for c in columns))
        if out is None:
            out = part.new_empty(d)
        out[start : start + width] = part
    return out


def sort_columns(block: Tensor) -> Tensor:
    """Values of ``block`` sorted along dim 0, as an ``(n, B)`` view of a fresh ``(B, n)`` tensor
    (sorting contiguous rows of a transposed copy is faster than sorting along dim 0)."""
    return block.T.contiguous().sort(dim=1).values.T


def mean_of_closest_sorted(sorted_values: Tensor, centre: Tensor, k: int) -> Tensor:
    r"""Per coordinate, the mean of the ``k`` values nearest to ``centre``.

    ``sorted_values`` is ``(n, d)`` sorted along dim 0 (it is overwritten: pass a scratch copy,
    such as ``x.sort(0).values``). In sorted order the k nearest values to any centre form a
    window; the window of smallest radius :math:`\max(c - s_j,\ s_{j+k-1} - c)` is found for the
    ``n - k + 1`` candidate starts at once, and the first (lowest) one wins on ties, i.e. ties in
    distance are broken toward the smaller value. Costs ``(n - k + 1, d)`` and ``(n, d)`` bool
    temporaries besides the input.
    """
    n = sorted_values.shape[0]
    if k == n:
        return sorted_values.mean(dim=0)
    starts = n - k + 1
    radius = torch.maximum(centre - sorted_values[:starts], sorted_values[k - 1 :] - centre)
    first = radius.argmin(dim=0)
    del radius
    pos = torch.arange(n, device=sorted_values.device)[:, None]
    outside = (pos < first) | (pos >= first + k)
    return sorted_values.masked_fill_(outside, 0).sum(dim=0) / k


class DistancesToPoint:
    r"""Squared distances from every row of ``x`` to a moving point, mostly one ``x @ u`` each.

    For iterative rules (Weiszfeld, centred clipping) that need :math:`\|x_i - v\|^2` for many
    points ``v``. With a fixed reference ``ref`` near the rows (their median) and
    :math:`u = v - \mathrm{ref}`:

    .. math::
        \|x_i - v\|^2 = \|x_i - \mathrm{ref}\|^2
            - 2\,\bigl(x_i^\top u - \mathrm{ref}^\top u\bigr) + \|u\|^2

    The first term is computed once, exactly (differences taken over blocks of columns); each
    call then costs one matrix-vector product instead of an ``(n, d)`` difference. The formula's
    rounding error is about ``eps * s_i`` with
    :math:`s_i = \|x_i - \mathrm{ref}\|^2 + \|u\|^2 + 2(\|x_i\| + \|\mathrm{ref}\|)\|u\|`;
    rows where the result is below ``1e-3 * s_i`` (``v`` has come close to them, as Weiszfeld
    does near a data point) are recomputed exactly from ``x_i - v``, so every distance keeps a
    relative error below ``1e3 * eps``. Half/bfloat16 rows are always computed exactly. Results
    are float64 ``(n,)``; rows of norm ``1e30`` in float32 give ``1e60``, not ``inf``.
    """

    GUARD = 1e-3

    def __init__(self, x: Tensor, ref: Tensor) -> None:
        self.x = x
        self.ref = ref
        self.exact_only = x.dtype not in (torch.float32, torch.float64)
        if not self.exact_only:
            self.ref_sq = self.exact(ref)
            self.x_norm = row_norms(x)
            self.ref_norm = float(row_norms(ref[None, :])[0])

    def exact(self, v: Tensor, rows: Tensor | None = None) -> Tensor:
        """Squared distances computed from the differences (all rows, or ``rows``), over blocks
        of columns so that no ``(n, d)`` difference is allocated."""
        x = self.x if rows is None else self.x[rows]
        n, d = x.shape
        width = max(1, COLUMN_BLOCK_BYTES // max(1, n * x.element_size()))
        if x.device.type != "cpu" or width >= d:
            return row_norms(x - v).square()
        total = torch.zeros(n, dtype=torch.float64, device=x.device)
        for start in range(0, d, width):
            end = start + width
            total += row_norms(x[:, start:end] - v[start:end]).square()
        return total

    def __call__(self, v: Tensor) -> Tensor:
        if self.exact_only:
            return self.exact(v)
        u = v - self.ref
        u_norm = float(row_norms(u[None, :])[0])
        cross = (self.x @ u).double() - float(torch.dot(self.ref, u))
        sq = self.ref_sq - 2.0 * cross + u_norm**2
        scale = self.ref_sq + u_norm**2 + 2.0 * (self.x_norm + self.ref_norm) * u_norm
        inexact = sq < self.GUARD * scale
        if bool(inexact.any()):
            rows = inexact.nonzero().squeeze(1)
            sq[rows] = self.exact(v, rows)
        return sq.clamp_(min=0.0)
