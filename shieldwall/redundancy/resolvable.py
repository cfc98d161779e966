"""Exact c_max(q) for resolvable placements: workers split into r parallel classes.

A placement is *resolvable* when its workers split into r classes and the workers of each class
partition the files (every file has exactly one replica per class). MOLS (a class per square),
both Ramanujan cases (a class per slope / block row), DETOX (the j-th member of every group) and
the baseline (one class) are. An adversary set is then a choice of a subset of lines (workers)
in every class, and a file is distorted when ≥ r′ classes chose the line through it.

Depth-first search over the classes, all 2^{|class|} subsets of a class evaluated at once as a
``(subsets, F)`` array of replica hits:

* the *last* class is solved exactly: its lines are disjoint, so the best choice of t lines is
  the t lines with the most files one hit short of r′;
* a node is pruned by the bound ``distorted + Σ top-t line weights`` over the remaining classes,
  where a file still needing d ≤ (#remaining classes) hits weighs 1/d on each of its remaining
  lines (a file that becomes distorted collects ≥ d such lines, so the weights pay for it);
* children are visited best bound first;
* symmetry (:mod:`.symmetry`): with the class orbits O₁ … O_t the search splits into "the lead
  class of O_i chosen non-empty, the classes of O₁ … O_{i−1} empty" (an automorphism moves any
  set into one case), and a class's subset is kept only if it is the canonical (largest code)
  image under the group elements that fix the subsets chosen so far (orbit pruning). Without
  them, orbit representatives ρ_i split the search into "ρ_i in, ρ₁ … ρ_{i−1} out".
"""

from __future__ import annotations

import time

import numpy as np

from shieldwall.redundancy.search import SearchResult, damage, greedy_adversaries
from shieldwall.redundancy.symmetry import Symmetry

__all__ = ["solve_resolvable"]


def _subset_tables(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All subsets of a class: (masks as bool (2^n, n), sizes, hits (2^n, F))."""
    n = lines.shape[0]
    codes = np.arange(2**n)
    masks = ((codes[:, None] >> np.arange(n)) & 1).astype(bool)
    return masks, masks.sum(axis=1), masks.astype(np.int64) @ lines.astype(np.int64)


def _cases(classes, reps, symmetry, q):
    """(class order, first class must be non-empty, forced workers, use the group) per case."""
    nc = len(classes)
    if q == 0:
        return []
    if symmetry is not None:
        out, excluded = [], set()
        for orbit in symmetry.class_orbits:
            lead = orbit[0]
            rest = [c for c in range(nc) if c != lead and c not in excluded]
            out.append(([lead, *rest], True, {}, True))
            excluded |= set(orbit)
        return out
    if reps:
        return [(list(range(nc)), False, {rep: True, **{o: False for o in reps[:i]}}, False)
                for i, rep in enumerate(reps)]
    return [(list(range(nc)), False, {}, False)]


def solve_resolvable(
    incidence: np.ndarray,
    classes: list[list[int]],
    q: int,
    majority: int,
    *,
    reps: tuple[int, ...] | None = None,
    symmetry: Symmetry | None = None,
    time_limit: float | None = 60.0,
    max_class_size: int = 14,
) -> SearchResult:
    """Exact c_max(q) by the class-by-class search (module docstring)."""
    nf = incidence.shape[1]
    if any(len(c) > max_class_size for c in classes):
        raise ValueError(f"class search enumerates 2^|class| subsets: classes ≤ {max_class_size}")
    inc = incidence.astype(np.int64)
    cls_all = [np.asarray(c) for c in classes]
    tables_all = [_subset_tables(inc[c]) for c in cls_all]
    group = None if symmetry is None else np.asarray(symmetry.group)
    start = greedy_adversaries(incidence, q, majority)
    best: list = [damage(incidence, start, majority), start]
    deadline = None if time_limit is None else time.monotonic() + time_limit
    state = {"timed_out": False, "nodes": 0}

    def run(order: list[int], nonempty: bool, forced: dict[int, bool], use_group: bool) -> None:
        cls = [cls_all[c] for c in order]
        tables = [tables_all[c] for c in order]
        nclass = len(cls)
        lines_after = [inc[np.concatenate(cls[j:])] if j < nclass else inc[:0]
                       for j in range(nclass + 1)]
        cap_after = [sum(len(c) for c in cls[j:]) for j in range(nclass + 1)]
        # code weights of every group element's image of a class subset (canonical forms)
        weights = []
        for c in cls:
            if not use_group:
                weights.append(None)
                continue
            pos = {int(w): p for p, w in enumerate(c)}
            img = np.vectorize(pos.__getitem__)(group[:, c])  # (|H|, n) positions of images
            weights.append(2 ** (len(c) - 1 - img))

        def bounds(hits: np.ndarray, left: np.ndarray, j: int) -> np.ndarray:
            """Upper bounds for children ``hits`` (n, F) with ``left`` picks in classes ≥ j."""
            done = (hits >= majority).sum(axis=1)
            remaining = nclass - j
            need = majority - hits
            w = np.where((need >= 1) & (need <= remaining), 1.0 / np.maximum(need, 1), 0.0)
            lw = -np.sort(-(w @ lines_after[j].T), axis=1)  # (n, lines) descending
            csum = np.concatenate([np.zeros((len(hits), 1)), np.cumsum(lw, axis=1)], axis=1)
            return done + np.floor(csum[np.arange(len(hits)), left] + 1e-9)

        def dfs(hits, chosen, left, j, stab) -> None:
            if state["timed_out"]:
                return
            state["nodes"] += 1
            if deadline is not None and state["nodes"] % 64 == 0 \
                    and time.monotonic() > deadline:
                state["timed_out"] = True
                return
            masks, sizes, add = tables[j]
            ok = (sizes <= left) & (left - sizes <= cap_after[j + 1])
            if j == 0 and nonempty:
                ok &= sizes >= 1
            for w, inside in forced.items():
                pos = np.flatnonzero(cls[j] == w)
                if len(pos):
                    ok &= masks[:, pos[0]] == inside
            idx = np.flatnonzero(ok)
            stabs = None
            if stab is not None and len(stab) > 1:
                codes = masks[idx].astype(np.int64) @ weights[j][stab].T  # (n, |stab|)
                own = masks[idx].astype(np.int64) @ (2 ** np.arange(len(cls[j]) - 1, -1, -1))
                canonical = codes.max(axis=1) == own
                idx, codes, own = idx[canonical], codes[canonical], own[canonical]
                stabs = [stab[codes[i] == own[i]] for i in range(len(idx))]
            if len(idx) == 0:
                return
            child = hits[None, :] + add[idx]
            if j == nclass - 1:  # last class: every child is a complete set
                vals = (child >= majority).sum(axis=1)
                k = int(vals.argmax())
                if vals[k] > best[0]:
                    sel = [*chosen, cls[j][masks[idx[k]]]]
                    best[0], best[1] = int(vals[k]), sorted(int(x) for a in sel for x in a)
                return
            ub = bounds(child, left - sizes[idx], j + 1)
            for t in np.argsort(-ub, kind="stable"):
                if ub[t] <= best[0] or state["timed_out"]:
                    continue
                m = idx[t]
                dfs(child[t], [*chosen, cls[j][masks[m]]], left - int(sizes[m]), j + 1,
                    None if stabs is None else stabs[t])

        dfs(np.zeros(nf, np.int64), [], q, 0,
            np.arange(len(group)) if use_group else None)

    for order, nonempty, forced, use_group in _cases(classes, reps, symmetry, q):
        run(order, nonempty, forced, use_group)
    exact = not state["timed_out"]
    return SearchResult(best[0], best[1], exact, best[0] if exact else nf, "resolvable")
