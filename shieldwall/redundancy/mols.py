"""ByzShield's MOLS placement (Konstantinidis & Ramamoorthy, MLSys 2021, Section 4.1).

For a prime power l, the field GF(l) gives l − 1 mutually orthogonal Latin squares of degree l:
``L_a(i, j) = a·i + j`` for a = 1 … l − 1 (field arithmetic; for a prime l this is the authors'
``(k·i + j) mod l``). With replication r ≤ l − 1 the first r squares define the placement:

* files are the l² cells ``(i, j)``, file id ``i·l + j``;
* worker ``s·l + σ`` is the pair (square s, symbol σ) and holds the l cells where L_s shows σ.

So K = r·l workers, F = l² files, load l, every file on r workers (one per square). Each square's
l workers partition the files (a *parallel class*); orthogonality means two workers of different
squares share exactly one file. The biadjacency matrix has singular values √(rl) (once), √l and
0, so the normalised second eigenvalue μ₁ = 1/r the paper's bound uses.

Symmetries used by the exact searches (:mod:`.symmetry`): the translations
``(i, j) ↦ (i + u, j + v)`` move worker (s, σ) to (s, σ + a_s·u + v), keeping every square; the
linear maps of the plane that keep the set of the r directions permute the squares
(:func:`~.gf.direction_orbits`; for r ≤ 3 they reach every square as PGL(2, l) is
3-transitive), so one worker per orbit of squares represents all (``orbit_reps``).
"""

from __future__ import annotations

from shieldwall.redundancy.gf import GaloisField, direction_orbits, is_prime_power
from shieldwall.redundancy.placement import PLACEMENTS, Placement, PlacementError, check_sizes
from shieldwall.redundancy.symmetry import Symmetry, translation_group

__all__ = ["latin_squares", "mols", "mols_valid_sizes"]


def latin_squares(order: int, count: int | None = None) -> list[list[list[int]]]:
    """The first ``count`` (default ``order − 1``) MOLS ``L_a(i, j) = a·i + j`` over GF(order)."""
    field = GaloisField(order)
    count = order - 1 if count is None else count
    if not 0 <= count <= order - 1:
        raise ValueError(f"GF({order}) gives at most {order - 1} MOLS, asked for {count}")
    add, mul = field.add, field.mul
    return [
        [[add[mul[a][i]][j] for j in range(order)] for i in range(order)]
        for a in range(1, count + 1)
    ]


def mols_valid_sizes(replication: int, max_workers: int = 100) -> list[int]:
    """K = r·l ≤ ``max_workers`` with l a prime power and r ≤ l − 1."""
    r = replication
    return [r * l for l in range(r + 1, max_workers // max(r, 1) + 1) if is_prime_power(l)]


@PLACEMENTS.register("mols", aliases=("latin", "byzshield_mols"))
def mols(num_workers: int, replication: int) -> Placement:
    """MOLS placement with K = r·l workers (l a prime power, 1 ≤ r ≤ l − 1)."""
    k, r = check_sizes("mols", num_workers, replication)
    l = k // r
    if k % r or not is_prime_power(l) or r > l - 1:
        valid = ", ".join(map(str, mols_valid_sizes(r, max(60, 2 * k))))
        why = (
            f"K={k} is not a multiple of r={r}" if k % r
            else f"l = K/r = {l} is not a prime power" if not is_prime_power(l)
            else f"r={r} > l − 1 = {l - 1} (degree-{l} squares give only {l - 1} MOLS)"
        )
        raise PlacementError(
            f"mols needs K = r·l with l a prime power and r ≤ l − 1: {why}; "
            f"valid K for r={r}: {valid or 'none'}"
        )
    squares = latin_squares(l, r)
    rows: list[list[int]] = [[] for _ in range(k)]
    for s, square in enumerate(squares):
        for i in range(l):
            for j in range(l):
                rows[s * l + square[i][j]].append(i * l + j)
    field = GaloisField(l)
    # square s uses a = s + 1; its lines a·i + j = σ have direction (1, −a)
    slope = {next(b for b in range(l) if field.add[s + 1][b] == 0): s for s in range(r)}
    class_orbits = sorted(sorted(slope[x] for x in o) for o in direction_orbits(l, list(slope)))
    # translation (u, v) of the cells moves worker (s, σ) to (s, σ + a_s·u + v)
    shifts = [[field.add[field.mul[s + 1][u]][v] for s in range(r)]
              for u in range(l) for v in range(l)]
    symmetry = Symmetry(translation_group(r, l, shifts, field.add), class_orbits)
    return Placement(
        rows, num_files=l * l, name="mols", params={"l": l},
        orbit_reps=tuple(o[0] * l for o in class_orbits),
        classes=[[s * l + sym for sym in range(l)] for s in range(r)],  # a square = a class
        symmetry=symmetry,
    )
