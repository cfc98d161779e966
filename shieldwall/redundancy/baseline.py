"""Baseline placement: no redundancy (r = 1, F = K, worker k computes file k).

Vanilla mini-batch SGD with a robust aggregator over the K worker gradients, the "baseline" of
DETOX and ByzShield; q adversaries distort exactly q files (c_max(q) = q, ε = q/K).
"""

from __future__ import annotations

from shieldwall.redundancy.placement import PLACEMENTS, Placement, PlacementError, check_sizes

__all__ = ["baseline"]


@PLACEMENTS.register("baseline", aliases=("vanilla", "none"))
def baseline(num_workers: int, replication: int = 1) -> Placement:
    """K files, one per worker; ``replication`` must be 1."""
    k, r = check_sizes("baseline", num_workers, replication)
    if r != 1:
        raise PlacementError(
            f"baseline has no redundancy: replication must be 1, got {r} "
            "(use detox, mols, rama_one or rama_two for r > 1)"
        )
    return Placement([[w] for w in range(k)], num_files=k, name="baseline", orbit_reps=(0,),
                     classes=[list(range(k))])
