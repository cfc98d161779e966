"""What the pre-aggregators share: the non-finite row policy.

A pre-aggregator maps ``n`` rows to ``m`` rows and the next stage still drops rows with NaN/Inf
(spending one unit of ``f`` each). So a pre-aggregator never *repairs* a non-finite row: it keeps
it non-finite (as a NaN row) and keeps it out of the finite rows' computation, so that one
Byzantine row in stays at most one Byzantine row out. More than ``f`` non-finite rows raise
``ValueError`` at once, as every aggregator would.
"""

from __future__ import annotations

from torch import Tensor

from shieldwall.aggregators.base import check_updates, finite_row_mask

__all__ = ["finite_rows", "embed_rows"]


def finite_rows(updates: Tensor, f: int, rule: str) -> Tensor | None:
    """``None`` when every row is finite, else the boolean mask of finite rows.

    Raises ``ValueError`` on malformed input or when more than ``f`` rows are non-finite.
    """
    check_updates(updates)
    if f < 0:
        raise ValueError(f"{rule} needs f >= 0, got f={f}")
    finite = finite_row_mask(updates)
    if finite is None:
        return None
    num_bad = int((~finite).sum())
    if num_bad > f:
        raise ValueError(
            f"{rule}: {num_bad} of {updates.shape[0]} rows contain NaN/Inf but only f={f} "
            "Byzantine rows are tolerated; raise f or check the workers"
        )
    return finite


def embed_rows(rows: Tensor, finite: Tensor) -> Tensor:
    """Rows computed for the finite inputs, back at their positions; NaN rows elsewhere."""
    out = rows.new_full((finite.shape[0], rows.shape[1]), float("nan"))
    out[finite] = rows
    return out
