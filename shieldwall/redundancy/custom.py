"""User-given placements: the ``file`` entry of :data:`~.placement.PLACEMENTS`.

``file(num_workers, replication, path=...)`` loads a JSON or CSV placement (format in
:mod:`.placement`) and checks it against the requested K and r when those are given (``None`` or
0 = take them from the file).
"""

from __future__ import annotations

from pathlib import Path

from shieldwall.redundancy.placement import PLACEMENTS, Placement, PlacementError, load_placement

__all__ = ["from_file"]


@PLACEMENTS.register("file", aliases=("custom", "user"))
def from_file(
    num_workers: int | None = None, replication: int | None = None, *, path: str | Path = ""
) -> Placement:
    """The placement in ``path``; K and r, when given, must match it."""
    if not path:
        raise PlacementError("placement 'file' needs path=... (a JSON or CSV placement file)")
    p = load_placement(path)
    if num_workers and int(num_workers) != p.num_workers:
        raise PlacementError(f"{path}: has K={p.num_workers} workers, not {num_workers}")
    if replication and int(replication) != p.replication:
        raise PlacementError(f"{path}: has replication r={p.replication}, not {replication}")
    return p
