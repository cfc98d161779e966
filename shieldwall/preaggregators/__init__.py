"""Pre-aggregation steps: ``fn(updates: Tensor[n, d], f: int, **params) -> Tensor[m, d]``.

Applied before an aggregator (bucketing, nearest-neighbour mixing, clipping, …) and chained in
the order ``defense_args`` names them; see :func:`preaggregate_chain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from shieldwall.registry import Registry, import_submodules

__all__ = ["PREAGGREGATORS", "preaggregate_chain"]

PREAGGREGATORS: Registry = Registry("pre-aggregator")


def preaggregate_chain(
    updates: Tensor, f: int, steps: Sequence[tuple[str, dict[str, Any]]]
) -> tuple[Tensor, int]:
    """Apply each ``(name, params)`` step in order.

    Returns the rows and the number of Byzantine rows the next stage must still tolerate. A step
    may change that number (bucketing of size s leaves at most f buckets with a Byzantine member;
    its registry entry says so with ``meta["f_after"](n, f, **params)``).
    """
    for name, params in steps:
        entry = PREAGGREGATORS.entry(name)
        n = updates.shape[0]
        updates = entry.obj(updates, f, **params)
        f_after = entry.meta.get("f_after")
        if f_after is not None:
            f = int(f_after(n, f, **params))
    return updates, f


import_submodules(__name__)
