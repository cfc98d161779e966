"""Fast path of the coordinate-wise rules: sorting networks over cache-sized column blocks.

Median, trimmed mean, MeaMed, Phocas and Bulyan's coordinate phase all reduce each column of the
``(n, d)`` input to one value from its sorted values. The pure-torch path sorts blocks of columns
with :func:`torch.sort` (or selects with :func:`torch.median`); this one, where `numba
<https://numba.pydata.org>`_ is installed, copies 32 columns at a time into an ``(n,
32)`` scratch block that stays in the L1/L2 cache, sorts every column of it at once with
Batcher's odd-even merge sort (``≈ n log² n / 4`` compare-exchanges, each a SIMD min/max across
the block's columns, no branch per value) and writes the rule's value of each column. The input
is read once, nothing ``(n, d)``-sized is allocated (peak extra memory: the ``(d,)`` output and a
few kilobytes per thread), and the columns are split between ``torch.get_num_threads()`` threads
(the kernel runs without the GIL).

Results are those of the torch path: the same selections (a sorting network sorts exactly), the
same median convention (mean of the two middle values for even ``n``, as ``0.5 a + 0.5 b`` in the
input's dtype), the same windows and tie-breaks (radii computed in the input's dtype, the lowest
window wins). Only the sums differ in rounding: they are accumulated in float64 here and in the
input's dtype (in another order) by torch, so float32 means may differ in the last bit.

Used only for CPU float32/float64 tensors that do not require grad; anything else (CUDA,
float16/bfloat16, numba absent or failing to load) returns ``None`` and the caller runs the torch
path. ``SHIELDWALL_NO_NUMBA=1`` in the environment or :func:`torch_fallback` force the torch path
(the tests run every rule on both).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MEDIAN",
    "TRIMMED_MEAN",
    "CLOSEST_TO_MEDIAN",
    "CLOSEST_TO_TRIMMED_MEAN",
    "available",
    "columns_reduce",
    "fused_steps",
    "FusedSteps",
    "row_sq_distances",
    "network_pairs",
    "torch_fallback",
]

log = logging.getLogger(__name__)

MEDIAN = 0  # median of the column (mean of the two middle values for even n)
TRIMMED_MEAN = 1  # mean of the sorted values b .. n - b - 1
CLOSEST_TO_MEDIAN = 2  # mean of the k values nearest to the median
CLOSEST_TO_TRIMMED_MEAN = 3  # mean of the k values nearest to the b-trimmed mean

MIN_COLUMNS_PER_THREAD = 4096  # below this a thread hand-off costs more than it saves

_forced_off = threading.local()
_lock = threading.Lock()
_state: dict[str, object] = {}


@contextlib.contextmanager
def torch_fallback() -> Iterator[None]:
    """Within this block (in this thread), the coordinate-wise rules use the torch path."""
    previous = getattr(_forced_off, "value", False)
    _forced_off.value = True
    try:
        yield
    finally:
        _forced_off.value = previous


def _kernel():
    """The numba module, or ``None`` when numba is absent, disabled or fails to load."""
    if "kernel" not in _state:
        with _lock:
            if "kernel" not in _state:
                kernel = None
                if os.environ.get("SHIELDWALL_NO_NUMBA", "") not in ("", "0"):
                    log.info("SHIELDWALL_NO_NUMBA set: coordinate-wise rules use torch")
                else:
                    try:
                        from shieldwall.aggregators import _select_numba as kernel
                    except Exception as exc:  # noqa: BLE001 - absent or broken install
                        log.info("numba unavailable (%s): coordinate-wise rules use torch", exc)
                        kernel = None
                _state["kernel"] = kernel
    return _state["kernel"]


def available() -> bool:
    """Whether the fast path runs here (numba loads and it is not forced off)."""
    return not getattr(_forced_off, "value", False) and _kernel() is not None


@functools.lru_cache(maxsize=64)
def network_pairs(n: int, outputs: tuple[int, ...] | None = None) -> np.ndarray:
    """Compare-exchange pairs ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort of ``n``.

    Built for the next power of two and pruned of every pair with ``j >= n``: a comparator puts
    the larger value at the larger index, so positions ``>= n`` padded with ``+inf`` would keep
    it throughout and every pair touching them is a no-op. With ``outputs`` (sorted positions
    that are read, e.g. the median's), also pruned of every pair that no later pair connects to
    them (a sixth fewer for a median). ``(m, 2)`` int64, in network order.
    """
    if outputs is not None:
        needed = set(outputs)
        kept = []
        for i, j in network_pairs(n)[::-1].tolist():
            if i in needed or j in needed:
                needed.update((i, j))
                kept.append((i, j))
        return np.asarray(kept[::-1], dtype=np.int64).reshape(-1, 2)
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    lo, hi = i + j, i + j + k
                    if lo // (2 * p) == hi // (2 * p) and hi < n:
                        pairs.append((lo, hi))
            k //= 2
        p *= 2
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def _executor() -> ThreadPoolExecutor:
    """A process-wide pool (recreated after a fork, whose child has none of the threads)."""
    pool = _state.get("pool")
    if pool is None or _state.get("pool_pid") != os.getpid():
        with _lock:
            pool = _state.get("pool")
            if pool is None or _state.get("pool_pid") != os.getpid():
                pool = ThreadPoolExecutor(
                    max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="shieldwall-select"
                )
                _state["pool"], _state["pool_pid"] = pool, os.getpid()
    return pool  # type: ignore[return-value]


def _applies(x: Tensor) -> bool:
    """CPU float32/float64 ``(n, d)`` without grad, and the kernels available."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not x.requires_grad
        and x.dim() == 2
        and available()
    )


def columns_reduce(
    x: Tensor, op: int, *, b: int = 0, k: int = 0, rows: Tensor | None = None
) -> Tensor | None:
    """The rule ``op`` over every column of ``x`` (or of ``x[rows]``), or ``None`` when the fast
    path does not apply (see the module notes); ``b`` and ``k`` as in the op's comment."""
    if not _applies(x):
        return None
    kernel = _kernel()
    x = x.contiguous()
    d = x.shape[1]
    if rows is None:
        row_index = np.arange(x.shape[0], dtype=np.int64)
    else:
        row_index = rows.to(device="cpu", dtype=torch.int64).contiguous().numpy()
    n = row_index.shape[0]
    out = torch.empty(d, dtype=x.dtype)
    if d == 0:
        return out
    pairs = network_pairs(n, tuple(sorted({(n - 1) // 2, n // 2})) if op == MEDIAN else None)
    width = kernel.BLOCK
    src, dst = x.numpy(), out.numpy()
    threads = max(1, min(torch.get_num_threads(), d // MIN_COLUMNS_PER_THREAD))
    if threads == 1:
        kernel.sorted_columns_reduce(src, row_index, pairs, dst, 0, d, op, b, k)
        return out
    # Equal shares of whole scratch blocks for each thread.
    blocks = -(-d // width)
    bounds = [min(d, (blocks * t // threads) * width) for t in range(threads + 1)]
    jobs = [
        _executor().submit(
            kernel.sorted_columns_reduce, src, row_index, pairs, dst, lo, hi, op, b, k
        )
        for lo, hi in zip(bounds[:-1], bounds[1:])
        if hi > lo
    ]
    for job in jobs:
        job.result()
    return out


MATVEC_SCRATCH_BYTES = 256 << 10  # columns per block of the fused pass: about an L2 cache


class FusedSteps:
    """One pass over ``x`` per Weiszfeld / CenteredClip step (make it with :func:`fused_steps`).

    ``steps(w, start, s)`` returns ``v``, ``x @ u`` (float64 NumPy), ``|u|^2`` and ``ref @ u``
    with ``u = v - ref``, where ``v = w @ x``, or ``v = start + (w @ x - start * s)`` when
    ``start`` is given, computed in the input's dtype like the torch path. Each cache-sized
    block of columns is read once for both products: one memory pass instead of two
    matrix-vector products. What does not change between steps is prepared once.
    """

    def __init__(self, x: Tensor, ref: Tensor) -> None:
        self.kernel = _kernel()
        self.x = x.contiguous()
        n, d = self.x.shape
        self.src = self.x.numpy()
        self.ref = ref.to(dtype=x.dtype).contiguous()
        self.centre = self.ref.numpy()
        self.no_start = np.empty(0, dtype=self.src.dtype)
        self.width = max(64, min(8192, MATVEC_SCRATCH_BYTES // max(1, n * x.element_size())))
        threads = max(1, min(torch.get_num_threads(), d // MIN_COLUMNS_PER_THREAD))
        blocks = -(-d // self.width) if d else 0
        bounds = [min(d, (blocks * t // threads) * self.width) for t in range(threads + 1)]
        self.shares = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def __call__(
        self, w: Tensor, start: Tensor | None = None, s: float = 0.0
    ) -> tuple[Tensor, np.ndarray, float, float]:
        n, d = self.src.shape
        weights = w.to(device="cpu", dtype=torch.float64).contiguous().numpy()
        previous = self.no_start
        if start is not None:
            previous = start.to(dtype=self.x.dtype).contiguous().numpy()
        out = torch.empty(d, dtype=self.x.dtype)
        dst = out.numpy()
        partial = np.zeros((max(1, len(self.shares)), n + 2), dtype=np.float64)
        args = (self.src, weights, previous, s, self.centre, dst)
        if len(self.shares) <= 1:
            for lo, hi in self.shares:
                self.kernel.combine_and_dot(*args, partial[0], lo, hi, self.width)
            total = partial[0]
        else:
            jobs = [
                _executor().submit(
                    self.kernel.combine_and_dot, *args, partial[t], lo, hi, self.width
                )
                for t, (lo, hi) in enumerate(self.shares)
            ]
            for job in jobs:
                job.result()
            total = partial.sum(axis=0)
        return out, total[:n], float(total[n]), float(total[n + 1])


def fused_steps(x: Tensor, ref: Tensor) -> FusedSteps | None:
    """A :class:`FusedSteps` over ``x``, or ``None`` where the fast path does not apply."""
    if not _applies(x):
        return None
    return FusedSteps(x, ref)


def row_sq_distances(
    x: Tensor, v: Tensor, rows: Tensor | None = None
) -> tuple[Tensor, Tensor] | None:
    """``(|x_i - v|^2, |x_i|^2)`` for every row (or ``rows``) as float64 in one pass, or ``None``
    (torch path). Rows are split between threads."""
    if not _applies(x):
        return None
    kernel = _kernel()
    x = x.contiguous()
    n, d = x.shape
    if rows is None:
        index = np.arange(n, dtype=np.int64)
    else:
        index = rows.to(device="cpu", dtype=torch.int64).contiguous().numpy()
    point = v.to(dtype=x.dtype).contiguous().numpy()
    diff = np.zeros(index.shape[0], dtype=np.float64)
    norm = np.zeros(index.shape[0], dtype=np.float64)
    src = x.numpy()
    threads = max(1, min(torch.get_num_threads(), index.shape[0], n * d // MIN_COLUMNS_PER_THREAD))
    if threads == 1:
        kernel.row_sq_distances(src, point, index, diff, norm)
    else:
        bounds = [index.shape[0] * t // threads for t in range(threads + 1)]
        jobs = [
            _executor().submit(
                kernel.row_sq_distances, src, point, index[lo:hi], diff[lo:hi], norm[lo:hi]
            )
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ]
        for job in jobs:
            job.result()
    return torch.from_numpy(diff), torch.from_numpy(norm)
