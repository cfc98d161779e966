"""Exact worst-case adversary search: the q workers that control the most files.

A file is *distorted* when at least r′ = ⌊r/2⌋ + 1 of its r replicas are adversarial, because
then the liars win its vote. Given the (K, F) incidence A, find S ⊆ workers, |S| = q, maximising
c(S) = #{f : Σ_{k∈S} A[k, f] ≥ r′}; the maximum is ByzShield's c_max^(q).

Three exact methods, each returning the value, a set attaining it, whether optimality is proven,
and a proven upper bound:

* :func:`solve_milp` — the integer program ``max Σ_f y_f`` s.t. ``Σ_k x_k = q``,
  ``r′·y_f ≤ Σ_{k∈W(f)} x_k``, x, y binary, solved by HiGHS through ``scipy.optimize.milp``
  with zero gap. Symmetry breaking: ``reps`` are orbit representatives of the placement's
  automorphisms, so some optimal set contains one; one program per representative fixes it in
  (and the earlier ones out). On a time limit it returns the incumbent and HiGHS's dual bound.
* :func:`solve_branch_and_bound` — self-written depth-first search over worker ids with the
  bound "each remaining pick adds at most l replica hits, so at most the k cheapest open files
  (fewest missing hits) can still be completed"; the fallback when ``milp`` is absent.
* :func:`solve_exhaustive` — all q-subsets, for tiny cases and tests.

:func:`greedy_adversaries` gives a fast lower bound (and the incumbent of the search).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SearchResult",
    "damage",
    "greedy_adversaries",
    "solve_milp",
    "solve_branch_and_bound",
    "solve_exhaustive",
]


@dataclass
class SearchResult:
    value: int
    adversaries: list[int]
    exact: bool
    upper_bound: int
    method: str


def damage(incidence: np.ndarray, adversaries: list[int] | tuple[int, ...], majority: int) -> int:
    """Files with at least ``majority`` replicas on ``adversaries``."""
    if len(adversaries) == 0:
        return 0
    hits = incidence[list(adversaries)].sum(axis=0)
    return int((hits >= majority).sum())


def greedy_adversaries(incidence: np.ndarray, q: int, majority: int) -> list[int]:
    """Pick workers one by one, maximising (distorted files, then total progress on open files)."""
    k = incidence.shape[0]
    hits = np.zeros(incidence.shape[1], dtype=np.int64)
    chosen: list[int] = []
    for _ in range(q):
        best, best_key = -1, None
        for w in range(k):
            if w in chosen:
                continue
            new = hits + incidence[w]
            key = (int((new >= majority).sum()), int(np.minimum(new, majority).sum()), -w)
            if best_key is None or key > best_key:
                best, best_key = w, key
        chosen.append(best)
        hits += incidence[best]
    return sorted(chosen)


def solve_exhaustive(incidence: np.ndarray, q: int, majority: int) -> SearchResult:
    best, best_set = -1, ()
    for subset in itertools.combinations(range(incidence.shape[0]), q):
        v = damage(incidence, subset, majority)
        if v > best:
            best, best_set = v, subset
    return SearchResult(best, list(best_set), True, best, "exhaustive")


def solve_milp(
    incidence: np.ndarray,
    q: int,
    majority: int,
    *,
    reps: tuple[int, ...] | None = None,
    upper: int | None = None,
    time_limit: float | None = 60.0,
) -> SearchResult:
    """Exact c_max(q) by HiGHS (see the module docstring); ``upper`` is a known valid bound.

    With orbit representatives ρ₁ … ρ_t the search splits into t programs, the i-th with
    ρ_i chosen and ρ_1 … ρ_{i−1} not; after the first, each only has to beat the best so far
    (``Σ y ≥ best + 1``, infeasible = cannot).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix, hstack, identity

    k, nf = incidence.shape
    inc = csr_matrix(incidence.T.astype(float))  # (F, K)
    c = np.concatenate([np.zeros(k), -np.ones(nf)])
    base = [
        LinearConstraint(np.concatenate([np.ones(k), np.zeros(nf)])[None], q, q),
        LinearConstraint(hstack([-inc, majority * identity(nf)]), -np.inf, 0),
    ]
    total = np.concatenate([np.zeros(k), np.ones(nf)])[None]
    cap = nf if upper is None else min(nf, upper)
    best_set = greedy_adversaries(incidence, q, majority)
    best = damage(incidence, best_set, majority)
    deadline = None if time_limit is None else time.monotonic() + float(time_limit)
    cases = [(rep, reps[:i]) for i, rep in enumerate(reps)] if reps and q >= 1 else [(None, ())]
    bound = best
    for rep, excluded in cases:
        if best >= cap:
            break
        lb, ub = np.zeros(k + nf), np.ones(k + nf)
        if rep is not None:
            lb[rep] = 1.0
            ub[list(excluded)] = 0.0
        options: dict = {"mip_rel_gap": 0.0}
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                bound = cap  # this case was never searched
                break
            options["time_limit"] = left
        rows = [*base, LinearConstraint(total, best + 1 if best > 0 else 0, cap)]
        res = milp(c, constraints=rows, integrality=np.ones(k + nf), bounds=Bounds(lb, ub),
                   options=options)
        if res.x is not None:
            cand = sorted(int(w) for w in np.flatnonzero(res.x[:k] > 0.5))
            value = damage(incidence, cand, majority)
            if len(cand) == q and value > best:
                best_set, best = cand, value
        if res.status == 0 or res.status == 2:  # optimal, or infeasible: cannot beat best
            bound = max(bound, best)
        else:
            dual = getattr(res, "mip_dual_bound", None)
            case_bound = cap
            if dual is not None and np.isfinite(dual):
                case_bound = min(cap, int(np.floor(-dual + 1e-6)))
            bound = max(bound, case_bound)
    bound = max(bound, best)
    return SearchResult(best, best_set, best >= bound, bound, "milp")


def solve_branch_and_bound(
    incidence: np.ndarray,
    q: int,
    majority: int,
    *,
    reps: tuple[int, ...] | None = None,
    upper: int | None = None,
    time_limit: float | None = 60.0,
) -> SearchResult:
    """Exact c_max(q) by depth-first search with pruning (see the module docstring)."""
    inc = incidence.astype(np.int64)
    k, nf = inc.shape
    load = int(inc[0].sum())
    cap = nf if upper is None else min(nf, upper)
    suffix = np.vstack([np.cumsum(inc[::-1], axis=0)[::-1], np.zeros((1, nf), np.int64)])
    start = greedy_adversaries(incidence, q, majority)
    best = [damage(incidence, start, majority), start]
    deadline = None if time_limit is None else time.monotonic() + time_limit
    timed_out = [False]
    nodes = [0]

    def bound(hits: np.ndarray, nxt: int, left: int) -> int:
        done = hits >= majority
        need = majority - hits
        open_ = (~done) & (need <= left) & (need <= suffix[nxt])
        needs = np.sort(need[open_])
        completable = int(np.searchsorted(np.cumsum(needs), left * load, side="right"))
        return int(done.sum()) + completable

    def dfs(chosen: list[int], hits: np.ndarray, nxt: int, banned: frozenset) -> None:
        if best[0] >= cap or timed_out[0]:
            return
        nodes[0] += 1
        if deadline is not None and nodes[0] % 512 == 0 and time.monotonic() > deadline:
            timed_out[0] = True
            return
        left = q - len(chosen)
        if left == 0:
            v = int((hits >= majority).sum())
            if v > best[0]:
                best[0], best[1] = v, list(chosen)
            return
        if bound(hits, nxt, left) <= best[0]:
            return
        for w in range(nxt, k - left + 1):
            if w in banned:
                continue
            chosen.append(w)
            dfs(chosen, hits + inc[w], w + 1, banned)
            chosen.pop()
            if best[0] >= cap or timed_out[0]:
                return

    zero = np.zeros(nf, np.int64)
    if q == 0:
        return SearchResult(0, [], True, 0, "branch_and_bound")
    if reps:
        # some optimal set contains a representative: branch on the first one it contains
        for i, rep in enumerate(reps):
            dfs([rep], zero + inc[rep], 0, frozenset(reps[:i]) | {rep})
    else:
        dfs([], zero, 0, frozenset())
    exact = not timed_out[0]
    value, chosen = best
    return SearchResult(value, sorted(chosen), exact or value >= cap,
                        value if exact else cap, "branch_and_bound")
