"""Small finite fields GF(p^k) for the Latin-square placements.

Elements are the integers ``0 … p^k − 1``: the base-p digits of an integer are the coefficients
of a polynomial of degree < k over GF(p) (least significant digit = constant term). Addition is
digit-wise mod p; multiplication is polynomial multiplication reduced modulo the
lexicographically first monic irreducible polynomial of degree k. For k = 1 this is arithmetic
mod p. Only meant for the small orders a placement needs (tables are ``O(q²)``).

:func:`direction_orbits` serves the placements built from parallel classes of lines of the
affine plane GF(q)² (MOLS, Ramanujan Case 1): a linear map g of the plane maps lines to lines
and the class of direction x to the class of g(x), acting on the q + 1 directions (the
projective line) as PGL(2, q). Maps that keep the set of used directions are automorphisms of
the placement, so workers of directions in one orbit are equivalent.
"""

from __future__ import annotations

import itertools
from functools import cache

__all__ = ["is_prime", "prime_power", "is_prime_power", "GaloisField", "direction_orbits"]


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


def prime_power(n: int) -> tuple[int, int] | None:
    """``(p, k)`` with ``n = p^k`` for a prime p and k ≥ 1, else ``None``."""
    if n < 2:
        return None
    p = next(d for d in range(2, n + 1) if n % d == 0)  # smallest prime factor
    k, m = 0, n
    while m % p == 0:
        m //= p
        k += 1
    return (p, k) if m == 1 else None


def is_prime_power(n: int) -> bool:
    return prime_power(n) is not None


def _poly_mulmod(a: list[int], b: list[int], mod: list[int], p: int) -> list[int]:
    """(a·b) mod ``mod`` over GF(p); polynomials as coefficient lists, constant term first."""
    prod = [0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b):
                prod[i + j] = (prod[i + j] + x * y) % p
    k = len(mod) - 1  # mod is monic of degree k
    for deg in range(len(prod) - 1, k - 1, -1):
        c = prod[deg]
        if c:
            for i in range(k + 1):
                prod[deg - k + i] = (prod[deg - k + i] - c * mod[i]) % p
    return (prod + [0] * k)[:k]


def _is_irreducible(poly: list[int], p: int) -> bool:
    """True if ``poly`` (monic, degree k) has no factor of degree 1 … k//2 over GF(p)."""
    k = len(poly) - 1
    for d in range(1, k // 2 + 1):
        for coeffs in itertools.product(range(p), repeat=d):
            divisor = list(coeffs) + [1]
            if not any(_poly_mulmod(poly, [1], divisor, p)):  # poly mod divisor == 0
                return False
    return True


@cache
def _irreducible(p: int, k: int) -> tuple[int, ...]:
    if k == 1:
        return (0, 1)
    for coeffs in itertools.product(range(p), repeat=k):
        poly = list(coeffs) + [1]
        if poly[0] != 0 and _is_irreducible(poly, p):
            return tuple(poly)
    raise AssertionError(f"no irreducible polynomial of degree {k} over GF({p})")  # unreachable


class GaloisField:
    """GF(q), q = p^k, with addition and multiplication tables over ``0 … q − 1``."""

    def __init__(self, order: int) -> None:
        pk = prime_power(order)
        if pk is None:
            raise ValueError(f"GF({order}) does not exist: the order must be a prime power")
        self.order, (self.p, self.k) = order, pk
        self.modulus = _irreducible(self.p, self.k)
        digits = [self._digits(x) for x in range(order)]
        self.add = [[self._number([(a + b) % self.p for a, b in zip(x, y)]) for y in digits]
                    for x in digits]
        self.mul = [[self._number(_poly_mulmod(x, y, list(self.modulus), self.p)) for y in digits]
                    for x in digits]

    def _digits(self, x: int) -> list[int]:
        out = []
        for _ in range(self.k):
            x, d = divmod(x, self.p)
            out.append(d)
        return out

    def _number(self, digits: list[int]) -> int:
        return sum(d * self.p**i for i, d in enumerate(digits))

    def __repr__(self) -> str:
        return f"GaloisField({self.order})"


def direction_orbits(order: int, directions: list[int], *, max_order: int = 16) -> list[list[int]]:
    """Orbits of the used ``directions`` under the linear maps that keep their set.

    Directions are slopes: ``x`` in ``0 … q − 1`` is the line direction spanned by ``(1, x)``,
    ``q`` is the vertical ``(0, 1)``. Brute force over GL(2, q) (``q⁴`` matrices), so for
    ``order > max_order`` every direction is returned as its own orbit (always valid).
    """
    if order > max_order:
        return [[d] for d in directions]
    f = GaloisField(order)
    add, mul, q = f.add, f.mul, order
    inv = {a: next(b for b in range(1, q) if mul[a][b] == 1) for a in range(1, q)}
    neg = {a: next(b for b in range(q) if add[a][b] == 0) for a in range(q)}

    def image(m: tuple[int, int, int, int], x: int) -> int:
        a, b, c, d = m  # (u, v) ↦ (a·u + b·v, c·u + d·v)
        u, v = (0, 1) if x == q else (1, x)
        nu = add[mul[a][u]][mul[b][v]]
        nv = add[mul[c][u]][mul[d][v]]
        return q if nu == 0 else mul[nv][inv[nu]]

    used = set(directions)
    parent = {d: d for d in directions}

    def find(d: int) -> int:
        while parent[d] != d:
            d = parent[d]
        return d

    for m in itertools.product(range(q), repeat=4):
        a, b, c, d = m
        if add[mul[a][d]][neg[mul[b][c]]] == 0:
            continue  # singular
        images = {x: image(m, x) for x in directions}
        if set(images.values()) == used:
            for x, y in images.items():
                parent[find(x)] = find(y)
    orbits: dict[int, list[int]] = {}
    for x in directions:
        orbits.setdefault(find(x), []).append(x)
    return list(orbits.values())
