"""Redundancy defenses: placements, majority vote, distortion analysis (pure math).

Each part ("file") of the batch is computed by r workers; the parameter server votes per file
(:mod:`.vote`) and runs a robust aggregator over the F voted file gradients. A placement
(:mod:`.placement`) says who computes what; :data:`PLACEMENTS` maps names to builders
``fn(num_workers, replication, **params) -> Placement``:

========== ====================================================== ============================
name       construction                                           sizes
========== ====================================================== ============================
baseline   no redundancy, worker k computes file k                r = 1, F = K
detox      K/r disjoint groups of r workers (DETOX, draco-lite)   r | K, F = K/r
mols       r of the l − 1 MOLS of degree l over GF(l) (ByzShield) K = r·l, l prime power, r < l
rama_one   Ramanujan bigraph Case 1 (ByzShield)                   K = r·s, s prime > r, F = s²
rama_two   Ramanujan bigraph Case 2 with parameter m (ByzShield)  r prime, K = r², F = m·r
file       a user placement from JSON or CSV (``path=...``)       any bi-regular graph
========== ====================================================== ============================

:mod:`.vote` takes the per-file majority vote. :mod:`.analysis` computes c_max(q), the most files
q colluding workers control, exactly (closed form for groups, :mod:`.resolvable` class-by-class
search with the symmetries of :mod:`.symmetry`, or the integer program / branch-and-bound of
:mod:`.search`), with a worst-case adversary set; :mod:`.byzshield_names` maps ByzShield's
command-line names. The maths and the reproduced ByzShield tables: ``docs/redundancy.md``.
"""

from __future__ import annotations

from shieldwall.redundancy.placement import (
    PLACEMENTS,
    Placement,
    PlacementError,
    build_placement,
    load_placement,
    majority_threshold,
)
from shieldwall.registry import import_submodules

__all__ = [
    "PLACEMENTS",
    "Placement",
    "PlacementError",
    "build_placement",
    "load_placement",
    "majority_threshold",
]

import_submodules(__name__)
