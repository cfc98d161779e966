"""Distortion analysis of a placement: how many files can q colluding workers control?

With replication r, a file's vote is lost once r′ = ⌊r/2⌋ + 1 of its replicas are adversarial
(r′ = (r+1)/2 for odd r). ByzShield (Konstantinidis & Ramamoorthy, MLSys 2021) measures a
placement by

    c_max(q) = max_{|S| = q} #{files with ≥ r′ replicas on S},      ε = c_max(q) / F,

the worst-case fraction of distorted voted gradients that the robust aggregator must then absorb.

How c_max is obtained (:func:`distortion`):

* **closed form** when every file's workers hold exactly the same files (DETOX groups, baseline):
  c_max(q) = min(⌊q/r′⌋, #groups) · l, attained by r′ workers of each group in turn;
* **class-by-class search** (:mod:`.resolvable`) when the builder gave parallel classes (MOLS,
  Ramanujan): exact, and fast enough for every size of the ByzShield paper (K = 35, q = 13);
* **exact search** otherwise (:mod:`.search`): the integer program through
  ``scipy.optimize.milp`` (HiGHS), or the self-written branch-and-bound; all searches use the
  placement's orbit representatives to break symmetry;
* when the search hits its time limit the row keeps the best set found (a lower bound), marks
  ``exact=False`` and reports the best proven upper bound.

Upper bounds (:func:`upper_bounds`):

* counting: every adversary holds l files, a distorted file needs r′ of them: c ≤ ⌊q·l/r′⌋;
* ByzShield's spectral bound. With μ₁ the second largest eigenvalue of AAᵀ/(l·r) (A the K × F
  incidence), the expansion of bi-regular graphs gives |N(S)| ≥ β = (q·l/r)/(μ₁ + (1 − μ₁)q/K)
  files touched by S. A distorted file takes ≥ r′ of the q·l edges out of S and any other touched
  file ≥ 1, so c·r′ + (|N(S)| − c) ≤ q·l, i.e. c ≤ γ = (q·l − β)/(r′ − 1). For MOLS, μ₁ = 1/r
  and γ = (2q²/r)/(1 + (r − 1)q/(r·l)) as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from shieldwall.redundancy.detox import detox_cmax
from shieldwall.redundancy.placement import Placement
from shieldwall.redundancy.resolvable import solve_resolvable
from shieldwall.redundancy.search import (
    SearchResult,
    damage,
    solve_branch_and_bound,
    solve_exhaustive,
    solve_milp,
)

__all__ = [
    "Row",
    "distortion",
    "distortion_table",
    "worst_case_adversaries",
    "distorted_files",
    "second_eigenvalue",
    "spectral_bound",
    "upper_bounds",
    "METHODS",
]

METHODS = ("auto", "closed_form", "resolvable", "milp", "branch_and_bound", "exhaustive")
#: the class search enumerates 2^|class| subsets per class
MAX_CLASS_SIZE = 14


@dataclass
class Row:
    """One q of a distortion table.

    Attributes:
        q: number of colluding workers.
        c_max: most files they control (exact when ``exact``; else the best set found).
        epsilon: ``c_max / F``.
        adversaries: a worst-case set of q worker ids attaining ``c_max``.
        exact: ``c_max`` is proven optimal.
        upper_bound: proven upper bound on c_max (= c_max when exact).
        spectral_bound: ByzShield's γ (``None`` when r′ = 1).
        method: how c_max was obtained.
    """

    q: int
    c_max: int
    epsilon: float
    adversaries: list[int]
    exact: bool
    upper_bound: int
    spectral_bound: float | None
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def _incidence(placement: Placement) -> np.ndarray:
    return placement.incidence.numpy().astype(bool)


def distorted_files(placement: Placement, adversaries: list[int] | tuple[int, ...]) -> int:
    """How many files have at least r′ of their replicas on ``adversaries``."""
    return damage(_incidence(placement), list(adversaries), placement.majority)


@lru_cache(maxsize=64)
def _mu1(key: bytes, shape: tuple[int, int], load: int, rep: int) -> float:
    inc = np.frombuffer(key, dtype=bool).reshape(shape).astype(float)
    sigma = np.linalg.svd(inc, compute_uv=False)
    if len(sigma) < 2:
        return 0.0
    return float(sigma[1] ** 2 / (load * rep))


def second_eigenvalue(placement: Placement) -> float:
    """μ₁: second largest eigenvalue of AAᵀ/(l·r) (= σ₂²/(l·r), A the incidence)."""
    inc = _incidence(placement)
    return _mu1(inc.tobytes(), inc.shape, placement.load, placement.replication)


def spectral_bound(placement: Placement, q: int) -> float | None:
    """ByzShield's γ(q) = (q·l − β)/(r′ − 1); ``None`` when r′ = 1 (r = 1)."""
    rp = placement.majority
    if rp <= 1 or q == 0:
        return None if rp <= 1 else 0.0
    k, l, r = placement.num_workers, placement.load, placement.replication
    mu = min(1.0, second_eigenvalue(placement))
    beta = (q * l / r) / (mu + (1 - mu) * q / k)
    return max(0.0, (q * l - beta) / (rp - 1))


def upper_bounds(placement: Placement, q: int) -> dict[str, int]:
    """Valid upper bounds on c_max(q): ``files``, ``counting`` and ``spectral``."""
    out = {"files": placement.num_files, "counting": q * placement.load // placement.majority}
    gamma = spectral_bound(placement, q)
    if gamma is not None:
        out["spectral"] = math.floor(gamma + 1e-9)
    return out


def _groups(placement: Placement) -> list[list[int]] | None:
    """Worker groups if every file's workers hold identical files (DETOX-like), else None."""
    rows = [tuple(r) for r in placement.files_of_worker]
    groups: dict[tuple[int, ...], list[int]] = {}
    for w, row in enumerate(rows):
        groups.setdefault(row, []).append(w)
    if all(len(g) == placement.replication for g in groups.values()):
        return list(groups.values())
    return None


def _closed_form(placement: Placement, q: int) -> SearchResult | None:
    groups = _groups(placement)
    if groups is None:
        return None
    rp, l = placement.majority, placement.load
    value = detox_cmax(q, len(groups) * placement.replication, placement.replication, l)
    order = [g[j] for g in groups for j in range(rp)]
    taken = set(order)
    order += [w for g in groups for w in g if w not in taken]
    chosen = sorted(order[:q])
    return SearchResult(value, chosen, True, value, "closed_form")


def distortion(
    placement: Placement, q: int, *, method: str = "auto", time_limit: float | None = 60.0
) -> Row:
    """c_max(q), ε and a worst-case adversary set (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    k = placement.num_workers
    if not 0 <= q <= k:
        raise ValueError(f"number of adversaries q must be in 0..{k} (K={k}), got {q}")
    bounds = upper_bounds(placement, q)
    cap = min(bounds.values())
    gamma = spectral_bound(placement, q)
    inc, rp = _incidence(placement), placement.majority
    result: SearchResult | None = None
    if method in ("auto", "closed_form"):
        result = _closed_form(placement, q)
        if result is None and method == "closed_form":
            raise ValueError(
                "closed form applies only to grouped placements (detox, baseline): every "
                "file's workers must hold the same files"
            )
    if result is None and q == 0:
        result = SearchResult(0, [], True, 0, "trivial")
    if result is None and method == "exhaustive":
        result = solve_exhaustive(inc, q, rp)
    classes = placement.classes
    fits = classes is not None and max(len(c) for c in classes) <= MAX_CLASS_SIZE
    if result is None and method == "resolvable" and not fits:
        raise ValueError(
            f"method 'resolvable' needs parallel classes of ≤ {MAX_CLASS_SIZE} workers "
            f"(mols, rama_one, rama_two); {placement.name} has "
            + ("none" if classes is None else f"classes of {max(len(c) for c in classes)}")
        )
    if result is None and method in ("auto", "resolvable") and fits:
        result = solve_resolvable(inc, classes, q, rp, reps=placement.orbit_reps,
                                  symmetry=placement.symmetry, time_limit=time_limit,
                                  max_class_size=MAX_CLASS_SIZE)
    if result is None and method in ("auto", "milp"):
        try:
            result = solve_milp(inc, q, rp, reps=placement.orbit_reps, upper=cap,
                                time_limit=time_limit)
        except ImportError:
            if method == "milp":
                raise ValueError("method 'milp' needs scipy ≥ 1.9 (scipy.optimize.milp)") from None
    if result is None:
        result = solve_branch_and_bound(inc, q, rp, reps=placement.orbit_reps, upper=cap,
                                        time_limit=time_limit)
    upper = min(result.upper_bound, cap) if not result.exact else result.value
    return Row(
        q=q,
        c_max=result.value,
        epsilon=result.value / placement.num_files,
        adversaries=list(result.adversaries),
        exact=result.exact or result.value >= upper,
        upper_bound=max(upper, result.value),
        spectral_bound=gamma,
        method=result.method,
    )


def distortion_table(
    placement: Placement,
    qs: list[int] | range,
    *,
    method: str = "auto",
    time_limit: float | None = 60.0,
) -> list[Row]:
    """:func:`distortion` for every q in ``qs``."""
    return [distortion(placement, int(q), method=method, time_limit=time_limit) for q in qs]


def worst_case_adversaries(
    placement: Placement, q: int, *, time_limit: float | None = 60.0
) -> list[int]:
    """A set of q workers controlling c_max(q) files (the omniscient adversary's choice)."""
    return distortion(placement, q, time_limit=time_limit).adversaries
