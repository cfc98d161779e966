"""ByzShield's Ramanujan-bigraph placements (Konstantinidis & Ramamoorthy, MLSys 2021, §4.2).

The construction (Burnwal, Vidyasagar & Sinha, "Deterministic completion of rectangular matrices
using Ramanujan bigraphs – II") takes a prime s, an integer m and the s × s cyclic shift P
(``P[a][b] = 1`` iff b ≡ a − 1 mod s); the biadjacency matrix B has s × m blocks,
block (i, j) = P^{i·j} (i < s, j < m), so B is s² × m·s and bi-regular with degrees m and s.

* **Case 1** (``rama_one``), m < s: the placement is Bᵀ. r = m, K = r·s workers, F = s² files,
  load s. Worker ``j·s + c`` holds the files ``i·s + (c + i·j mod s)``, i < s: the lines of
  slopes 0 … r − 1 of the plane GF(s)², i.e. the same geometry as MOLS of prime degree s (only
  the set of directions differs).
* **Case 2** (``rama_two``), m ≥ s with s | m (as the authors' code asserts): the placement is B.
  r = s (prime), K = r², F = m·r, load m. Worker ``i·s + a`` holds the files
  ``j·s + (a − i·j mod s)``, j < m. For m > s the files ``(j, c)`` and ``(j + s, c)`` lie on the
  same workers, so c_max scales by m/s.

Symmetries (:mod:`.symmetry`): translating the files moves workers within their classes;
in Case 1 the linear maps of GF(s)² that keep the slopes 0 … r − 1 permute the classes
(:func:`~.gf.direction_orbits`); in Case 2 the shear ``(j, c) ↦ (j, c − b·j)`` maps worker
``(i, a)`` to ``(i + b, a)``, so all workers are equivalent.

Both are Ramanujan: second singular value ≤ √(d_L − 1) + √(d_R − 1) (Case 1: √s; Case 2 with
s | m: √m), which bounds how well q workers can concentrate on a few files.
"""

from __future__ import annotations

from shieldwall.redundancy.gf import direction_orbits, is_prime
from shieldwall.redundancy.placement import PLACEMENTS, Placement, PlacementError, check_sizes
from shieldwall.redundancy.symmetry import Symmetry, translation_group

__all__ = ["rama_one", "rama_two", "rama_one_valid_sizes", "rama_two_valid_sizes"]


def rama_one_valid_sizes(replication: int, max_workers: int = 100) -> list[int]:
    """K = r·s ≤ ``max_workers`` with s a prime > r."""
    r = replication
    return [r * s for s in range(r + 1, max_workers // max(r, 1) + 1) if is_prime(s)]


def rama_two_valid_sizes(max_workers: int = 200) -> list[tuple[int, int]]:
    """``(K, r)`` pairs of Case 2: r prime, K = r²."""
    return [(s * s, s) for s in range(2, int(max_workers**0.5) + 1) if is_prime(s)]


@PLACEMENTS.register("rama_one", aliases=("ramanujan_one", "ramanujan1", "rama1"))
def rama_one(num_workers: int, replication: int) -> Placement:
    """Ramanujan Case 1: K = r·s with s a prime and r < s; F = s², load s."""
    k, r = check_sizes("rama_one", num_workers, replication)
    s = k // r
    if k % r or not is_prime(s) or r >= s:
        why = (
            f"K={k} is not a multiple of r={r}" if k % r
            else f"s = K/r = {s} is not prime" if not is_prime(s)
            else f"r={r} is not < s = K/r = {s}"
        )
        valid = ", ".join(map(str, rama_one_valid_sizes(r, max(60, 2 * k))))
        raise PlacementError(
            f"rama_one (Ramanujan Case 1) needs K = r·s with s prime and r < s: {why}; "
            f"valid K for r={r}: {valid or 'none'}"
        )
    rows = [[i * s + (c + i * j) % s for i in range(s)] for j in range(r) for c in range(s)]
    # worker (j, c) is a line of slope j; symmetric slopes give equivalent workers;
    # translating the files by (u, v) moves worker (j, c) to (j, c + v − u·j)
    class_orbits = sorted(sorted(o) for o in direction_orbits(s, list(range(r))))
    shifts = [[(v - u * j) % s for j in range(r)] for u in range(s) for v in range(s)]
    symmetry = Symmetry(translation_group(r, s, shifts, _cyclic(s)), class_orbits)
    return Placement(rows, num_files=s * s, name="rama_one", params={"s": s, "m": r},
                     orbit_reps=tuple(o[0] * s for o in class_orbits),
                     classes=[[j * s + c for c in range(s)] for j in range(r)],
                     symmetry=symmetry)


@PLACEMENTS.register("rama_two", aliases=("ramanujan_two", "ramanujan2", "rama2"))
def rama_two(num_workers: int, replication: int, *, m: int | None = None) -> Placement:
    """Ramanujan Case 2: r = s prime, K = s², m ≥ s a multiple of s (default m = s);
    F = m·s, load m."""
    k, s = check_sizes("rama_two", num_workers, replication)
    pairs = ", ".join(f"(K={a}, r={b})" for a, b in rama_two_valid_sizes(max(200, 2 * k)))
    if not is_prime(s) or k != s * s:
        why = f"r={s} is not prime" if not is_prime(s) else f"K={k} ≠ r² = {s * s}"
        raise PlacementError(
            f"rama_two (Ramanujan Case 2) needs a prime r and K = r²: {why}; valid: {pairs}"
        )
    m = s if m is None else int(m)
    if m < s or m % s:
        raise PlacementError(
            f"rama_two needs m ≥ r and m a multiple of r (files F = m·r, load m); got m={m}, "
            f"r={s}; valid m: {', '.join(str(s * t) for t in range(1, 5))}, …"
        )
    rows = [[j * s + (a - i * j) % s for j in range(m)] for i in range(s) for a in range(s)]
    # translating the files by (u, v) moves worker (i, a) to (i, a + v + i·u); the shear
    # (j, c) ↦ (j, c − b·j) moves (i, a) to (i + b, a): all block rows are equivalent
    shifts = [[(v + i * u) % s for i in range(s)] for u in range(s) for v in range(s)]
    symmetry = Symmetry(translation_group(s, s, shifts, _cyclic(s)), [list(range(s))])
    return Placement(rows, num_files=m * s, name="rama_two", params={"s": s, "m": m},
                     orbit_reps=(0,), classes=[[i * s + a for a in range(s)] for i in range(s)],
                     symmetry=symmetry)


def _cyclic(n: int) -> list[list[int]]:
    return [[(a + b) % n for b in range(n)] for a in range(n)]
