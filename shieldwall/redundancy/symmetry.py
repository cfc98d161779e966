"""Known symmetries of a placement, used only to prune the exact c_max searches.

An *automorphism* relabels workers and files so that the placement is unchanged; it maps any
adversary set S to one that distorts as many files, so a search may skip sets that are images of
sets it examines. Builders that know their geometry describe two kinds (:class:`Symmetry`):

* ``group`` — a group H of worker permutations that keep every parallel class (for the affine
  constructions, the translations of the plane GF(l)²: l² elements);
* ``class_orbits`` — which parallel classes some automorphism (possibly outside H) maps onto each
  other (for MOLS and Ramanujan Case 1, :func:`~.gf.direction_orbits`).

:meth:`Symmetry.check` verifies that ``group`` is a group of automorphisms keeping the classes;
``class_orbits`` cannot be checked cheaply and is tested against unpruned searches instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Symmetry", "translation_group"]


@dataclass
class Symmetry:
    """Automorphisms known for a placement with parallel classes.

    Attributes:
        group: worker permutations (``perm[w]`` = image of worker w), closed under composition,
            including the identity, each keeping every parallel class.
        class_orbits: a partition of the class indices; classes of one part are equivalent.
    """

    group: list[list[int]]
    class_orbits: list[list[int]]

    def check(self, files_of_worker: list[list[int]], classes: list[list[int]]) -> None:
        """Raise ValueError unless ``group`` is a group of class-keeping automorphisms and
        ``class_orbits`` partitions the classes."""
        k = len(files_of_worker)
        perms = {tuple(int(x) for x in p) for p in self.group}
        if tuple(range(k)) not in perms:
            raise ValueError("symmetry group must contain the identity")
        if any(sorted(p) != list(range(k)) for p in perms):
            raise ValueError("symmetry group elements must be permutations of the workers")
        arr = np.array(sorted(perms))
        composed = {tuple(row) for row in arr[:, arr].reshape(-1, k)}  # p∘q for all pairs
        if not composed <= perms:
            raise ValueError("symmetry group is not closed under composition")
        class_sets = [set(c) for c in classes]
        sig = _file_signature(files_of_worker)
        for p in perms:
            if any({p[w] for w in c} != c for c in class_sets):
                raise ValueError("symmetry group elements must keep every parallel class")
            if _file_signature([files_of_worker[p.index(w)] for w in range(k)]) != sig:
                raise ValueError("a symmetry group element is not an automorphism")
        parts = sorted(c for orbit in self.class_orbits for c in orbit)
        if parts != list(range(len(classes))):
            raise ValueError("class_orbits must partition the class indices")


def _file_signature(files_of_worker: list[list[int]]) -> list[tuple[int, ...]]:
    """Sorted columns of the incidence: equal iff the graphs agree up to renaming files."""
    nf = 1 + max(f for row in files_of_worker for f in row)
    cols: list[list[int]] = [[] for _ in range(nf)]
    for w, row in enumerate(files_of_worker):
        for f in row:
            cols[f].append(w)
    return sorted(tuple(c) for c in cols)


def translation_group(
    num_classes: int, class_size: int, shift: list[list[int]], add: list[list[int]]
) -> list[list[int]]:
    """Worker permutations ``(c, σ) ↦ (c, σ ⊕ shift[t][c])`` for every translation t.

    Worker ``c·class_size + σ`` is symbol σ of class c; ``add`` is the addition table of the
    symbols (GF(l) or ℤ_s) and ``shift[t][c]`` the amount translation t moves class c by.
    """
    out = []
    for moves in shift:
        out.append([c * class_size + add[sym][moves[c]]
                    for c in range(num_classes) for sym in range(class_size)])
    return out
