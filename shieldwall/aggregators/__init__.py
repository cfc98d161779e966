"""Robust aggregation rules: ``fn(updates: Tensor[n, d], f: int, **params) -> Tensor[d]``.

Every rule registers itself in :data:`AGGREGATORS` beside its definition. Use :func:`aggregate`
to run a rule by name and get an :class:`AggregateResult` (with the selected rows where the rule
knows them).
"""

from __future__ import annotations

from torch import Tensor

from shieldwall.aggregators.base import AggregateResult
from shieldwall.registry import Registry, import_submodules

__all__ = ["AGGREGATORS", "AggregateResult", "aggregate"]

AGGREGATORS: Registry = Registry("aggregator")


def aggregate(name: str, updates: Tensor, f: int, **params) -> AggregateResult:
    """Run the registered rule ``name``; uses its ``info`` variant when it has one."""
    entry = AGGREGATORS.entry(name)
    info_fn = entry.meta.get("info")
    if info_fn is not None:
        return info_fn(updates, f, **params)
    return AggregateResult(entry.obj(updates, f, **params))


import_submodules(__name__)
