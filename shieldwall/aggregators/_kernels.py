"""Numerical kernels shared by the robust aggregators (re-exported by :mod:`.base`).

All of them use torch kernels over whole rows or blocks of columns: no Python loop over
coordinates or over pairs of rows, and no ``(n, n, d)`` temporary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from shieldwall.aggregators import _select

__all__ = [
    "pairwise_sq_distances",
    "row_norms",
    "columnwise",
    "sort_columns",
    "mean_of_closest_sorted",
    "DistancesToPoint",
    "COLUMN_BLOCK_BYTES",
]


def pairwise_sq_distances(x: Tensor) -> Tensor:
    r"""``(n, n)`` squared Euclidean distances from one Gram matrix.

    .. math::
        D_{ij} = \max\bigl(0,\ \|x_i\|^2 + \|x_j\|^2 - 2\, x_i^\top x_j\bigr), \qquad D_{ii} = 0

    One ``x @ x.T`` (the squared norms are its diagonal); no ``(n, n, d)`` temporary. The result
    is exactly symmetric. Computed in float32 for half/bfloat16 inputs, else in the input's
    dtype. Entries whose terms overflow
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

    :meth:`combine` forms the next point as a combination of the rows and returns its distances
    in the same pass over ``x`` where the numba kernels run (one memory pass per iteration, same
    formula and guard).
    """

    GUARD = 1e-3

    def __init__(self, x: Tensor, ref: Tensor) -> None:
        self.x = x
        self.ref = ref
        self.exact_only = x.dtype not in (torch.float32, torch.float64)
        if not self.exact_only:
            fast = _select.row_sq_distances(x, ref)
            if fast is None:
                self.ref_sq = self.exact(ref)
                self.x_norm = row_norms(x)
            else:  # one pass for both
                self.ref_sq, x_sq = fast
                self.x_norm = x_sq.sqrt_()
            self.ref_norm = float(row_norms(ref[None, :])[0])

    def exact(self, v: Tensor, rows: Tensor | None = None) -> Tensor:
        """Squared distances computed from the differences (all rows, or ``rows``), over blocks
        of columns so that no ``(n, d)`` difference is allocated."""
        fast = _select.row_sq_distances(self.x, v, rows)
        if fast is not None:
            return fast[0]
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
        if v is self.ref:
            return self.exact(v) if self.exact_only else self.ref_sq.clone()
        if self.exact_only:
            return self.exact(v)
        u = v - self.ref
        return self._from_cross(v, u, (self.x @ u).double())

    def combine(
        self, w: Tensor, start: Tensor | None = None, s: float = 0.0, *, distances: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """The point ``v = w @ x`` or ``v = start + (w @ x - start * s)`` (``w`` cast to the rows'
        dtype, ``s`` a float), and ``self(v)`` (``None`` when ``distances`` is false and they
        would cost a second pass)."""
        if not hasattr(self, "_fused"):
            self._fused = None if self.exact_only else _select.fused_steps(self.x, self.ref)
        fused = None if self._fused is None else self._fused(w, start, s)
        if fused is None:
            y = w.to(self.x.dtype) @ self.x
            v = y if start is None else start + (y - start * s)
            return v, self(v) if distances else None
        # The guard of _from_cross in NumPy on (n,) arrays: a few microseconds, not a few torch
        # calls, per iteration.
        v, x_u, u_sq, ref_u = fused
        if not hasattr(self, "_np"):
            self._np = (self.ref_sq.numpy(), self.x_norm.numpy())
        ref_sq, x_norm = self._np
        u_norm = math.sqrt(u_sq)
        sq = ref_sq - 2.0 * (x_u - ref_u) + u_sq
        scale = ref_sq + u_sq + 2.0 * (x_norm + self.ref_norm) * u_norm
        rows = np.flatnonzero(sq < self.GUARD * scale)
        if rows.size:
            sq[rows] = self.exact(v, torch.from_numpy(rows)).numpy()
        return v, torch.from_numpy(np.maximum(sq, 0.0, out=sq))

    def _from_cross(self, v: Tensor, u: Tensor, x_u: Tensor) -> Tensor:
        """Squared distances from ``x_u = x @ u`` (float64), ``u = v - ref``, with the guard."""
        u_norm = float(row_norms(u[None, :])[0])
        cross = x_u - float(torch.dot(self.ref, u))
        sq = self.ref_sq - 2.0 * cross + u_norm**2
        scale = self.ref_sq + u_norm**2 + 2.0 * (self.x_norm + self.ref_norm) * u_norm
        inexact = sq < self.GUARD * scale
        if bool(inexact.any()):
            rows = inexact.nonzero().squeeze(1)
            sq[rows] = self.exact(v, rows)
        return sq.clamp_(min=0.0)
