"""Numba kernels behind :mod:`shieldwall.aggregators._select` (imported only when numba is).

Each kernel sorts the values of a block of columns with a sorting network (Batcher's odd-even
merge sort, comparators given by the caller) on a small ``(n, BLOCK)`` scratch copy of the
block: every compare-exchange is a min/max across ``BLOCK`` adjacent columns, a compile-time
constant, so it runs as a few unrolled SIMD instructions on data in the L1/L2 cache, with no
branch per value (a variable width costs 2-3x: loop overhead and remainder handling per
compare-exchange). Then one rule-specific
reduction of the sorted columns writes the block's part of the output. Everything runs without
the GIL (``nogil``): the caller splits the columns between threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BLOCK = 32  # columns sorted together (measured: 32 best at n = 256, within 10% of 64 at n = 64)

# Which reduction of the sorted columns sorted_columns_reduce applies.
MEDIAN = 0
TRIMMED_MEAN = 1
CLOSEST_TO_MEDIAN = 2
CLOSEST_TO_TRIMMED_MEAN = 3


@njit(nogil=True, cache=True, inline="always")
def _network(buf, pairs):
    for p in range(pairs.shape[0]):
        lo_row = buf[pairs[p, 0]]
        hi_row = buf[pairs[p, 1]]
        for c in range(BLOCK):
            a = lo_row[c]
            b = hi_row[c]
            lo_row[c] = b if b < a else a
            hi_row[c] = a if b < a else b


@njit(nogil=True, cache=True, inline="always")
def _median_rows(buf, width, n, centre):
    """``centre[:width]``: the medians of the sorted columns, in the input's dtype."""
    if n % 2 == 1:
        for c in range(width):
            centre[c] = buf[n // 2, c]
    else:
        half = buf.dtype.type(0.5)
        lower = buf[n // 2 - 1]
        upper = buf[n // 2]
        for c in range(width):
            centre[c] = lower[c] * half + upper[c] * half


@njit(nogil=True, cache=True, inline="always")
def _sum_rows(buf, width, start, stop, total):
    """``total[:width]`` (float64): the sums of the sorted rows ``start:stop``."""
    for c in range(width):
        total[c] = 0.0
    for i in range(start, stop):
        row = buf[i]
        for c in range(width):
            total[c] += row[c]


@njit(nogil=True, cache=True, inline="always")
def _closest_sum(buf, width, n, k, centre, radius, first, total):
    """``total[:width]``: per column, the sum of the first (lowest) window of ``k`` sorted values
    of smallest radius ``max(centre - s_j, s_{j+k-1} - centre)``, radii in the input's dtype."""
    for c in range(width):
        radius[c] = max(centre[c] - buf[0, c], buf[k - 1, c] - centre[c])
        first[c] = 0
    for j in range(1, n - k + 1):
        left = buf[j]
        right = buf[j + k - 1]
        for c in range(width):
            r = max(centre[c] - left[c], right[c] - centre[c])
            if r < radius[c]:
                radius[c] = r
                first[c] = j
    for c in range(width):
        total[c] = 0.0
    for i in range(n):
        row = buf[i]
        for c in range(width):
            if first[c] <= i and i < first[c] + k:
                total[c] += row[c]


@njit(nogil=True, cache=True, inline="always")
def _block(x, rows, pairs, out, lo, width, op, b, k, buf, centre, radius, first, total):
    """``out[lo:lo + width]`` from one block (inlined: ``width == BLOCK`` in the main loop is a
    constant there, which makes the copy-in twice as fast)."""
    n = rows.shape[0]
    for i in range(n):
        buf[i, :width] = x[rows[i], lo : lo + width]
    _network(buf, pairs)
    if op == MEDIAN:
        _median_rows(buf, width, n, centre)
        out[lo : lo + width] = centre[:width]
        return
    if op == TRIMMED_MEAN or op == CLOSEST_TO_TRIMMED_MEAN:
        _sum_rows(buf, width, b, n - b, total)
        for c in range(width):
            centre[c] = total[c] / (n - 2 * b)
        if op == TRIMMED_MEAN:
            out[lo : lo + width] = centre[:width]
            return
    else:
        _median_rows(buf, width, n, centre)
    _closest_sum(buf, width, n, k, centre, radius, first, total)
    o = out[lo : lo + width]
    for c in range(width):
        o[c] = total[c] / k


@njit(nogil=True, cache=True)
def sorted_columns_reduce(x, rows, pairs, out, start, stop, op, b, k):
    """``out[start:stop]``: the rule ``op`` over the columns ``start:stop`` of ``x[rows]``."""
    n = rows.shape[0]
    buf = np.zeros((n, BLOCK), dtype=x.dtype)  # a last, narrower block sorts stale columns too
    centre = np.empty(BLOCK, dtype=x.dtype)
    radius = np.empty(BLOCK, dtype=x.dtype)
    first = np.empty(BLOCK, dtype=np.int64)
    total = np.empty(BLOCK, dtype=np.float64)
    full = start + (stop - start) // BLOCK * BLOCK
    for lo in range(start, full, BLOCK):
        _block(x, rows, pairs, out, lo, BLOCK, op, b, k, buf, centre, radius, first, total)
    if full < stop:
        _block(x, rows, pairs, out, full, stop - full, op, b, k, buf, centre, radius, first, total)


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _dot4(r0, r1, r2, r3, vec):
    """Four rows' dot products with ``vec`` in the input's dtype, as a BLAS matrix-vector
    product would (``reassoc`` only lets the sums run in SIMD lanes); ``vec`` is read once."""
    zero = vec.dtype.type(0.0)
    t0 = t1 = t2 = t3 = zero
    for c in range(vec.shape[0]):
        u = vec[c]
        t0 += r0[c] * u
        t1 += r1[c] * u
        t2 += r2[c] * u
        t3 += r3[c] * u
    return t0, t1, t2, t3


@njit(nogil=True, cache=True)
def combine_and_dot(x, w, v_old, s, ref, out, dots, start, stop, block):
    """One pass over the columns ``start:stop`` of ``x`` for the iterative rules.

    ``out = w @ x`` (``v_old`` empty) or ``out = v_old + (w @ x - v_old * s)`` (CenteredClip's
    step), and ``dots[:n] += x @ (out - ref)``, all in the input's dtype like the torch path
    (``w`` and ``s`` cast to it; the dot products summed into float64 per block), with
    ``dots[n] += |u|^2`` and ``dots[n + 1] += ref @ u`` (float64), ``u = out - ref``: each
    cache-sized block of columns is read from memory once and used for both products, four rows
    at a time.
    """
    n = x.shape[0]
    dtype = x.dtype.type
    acc = np.empty(block, dtype=x.dtype)
    diff = np.empty(block, dtype=x.dtype)
    step = v_old.shape[0] > 0
    scale = dtype(s)
    quads = n - n % 4
    for lo in range(start, stop, block):
        hi = min(lo + block, stop)
        width = hi - lo
        a = acc[:width]
        a[:] = 0
        for i in range(0, quads, 4):
            w0, w1, w2, w3 = dtype(w[i]), dtype(w[i + 1]), dtype(w[i + 2]), dtype(w[i + 3])
            r0, r1, r2, r3 = x[i, lo:hi], x[i + 1, lo:hi], x[i + 2, lo:hi], x[i + 3, lo:hi]
            for c in range(width):
                a[c] += (w0 * r0[c] + w1 * r1[c]) + (w2 * r2[c] + w3 * r3[c])
        for i in range(quads, n):
            wi = dtype(w[i])
            row = x[i, lo:hi]
            for c in range(width):
                a[c] += wi * row[c]
        o = out[lo:hi]
        r = ref[lo:hi]
        u = diff[:width]
        if step:
            prev = v_old[lo:hi]
            for c in range(width):
                o[c] = prev[c] + (a[c] - prev[c] * scale)
        else:
            for c in range(width):
                o[c] = a[c]
        u_sq = 0.0
        ref_u = 0.0
        for c in range(width):
            u[c] = o[c] - r[c]
            u_sq += np.float64(u[c]) * np.float64(u[c])
            ref_u += np.float64(r[c]) * np.float64(u[c])
        dots[n] += u_sq
        dots[n + 1] += ref_u
        for i in range(0, quads, 4):
            t0, t1, t2, t3 = _dot4(
                x[i, lo:hi], x[i + 1, lo:hi], x[i + 2, lo:hi], x[i + 3, lo:hi], u
            )
            dots[i] += t0
            dots[i + 1] += t1
            dots[i + 2] += t2
            dots[i + 3] += t3
        for i in range(quads, n):
            row = x[i, lo:hi]
            t0, t1, t2, t3 = _dot4(row, row, row, row, u)
            dots[i] += t0


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _sq_norms_of_row(row, v):
    diff = 0.0
    norm = 0.0
    for c in range(row.shape[0]):
        a = np.float64(row[c])
        b = a - np.float64(v[c])
        diff += b * b
        norm += a * a
    return diff, norm


@njit(nogil=True, cache=True)
def row_sq_distances(x, v, rows, diff, norm):
    """``diff[t] = |x[rows[t]] - v|^2`` and ``norm[t] = |x[rows[t]]|^2`` in float64 (no
    overflow or underflow for float32 rows), reading each row once."""
    for t in range(rows.shape[0]):
        diff[t], norm[t] = _sq_norms_of_row(x[rows[t]], v)
