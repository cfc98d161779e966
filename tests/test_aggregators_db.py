"""The table of robust aggregation rules that drives the generic tests (like torch's optim_db).

One :class:`RuleCase` per registered rule: the valid ``(n, f)`` to test it at, its params, what
it promises (translation / scaling behaviour, where its output stays when ``f`` rows are
arbitrary) and a plain Python-loop reference implementation written here from the papers'
definitions, in float64, for the agreement tests. This module holds no tests itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from shieldwall.aggregators import AGGREGATORS, _select

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

Rows = list[list[float]]


# --------------------------------------------------------------------------- loop references
def _sqdist(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b))


def _column(rows: Rows, k: int) -> list[float]:
    return [row[k] for row in rows]


def _mean_rows(rows: Rows) -> list[float]:
    return [sum(col) / len(rows) for col in zip(*rows)]


def _closest_mean(values: list[float], centre: float, k: int) -> float:
    chosen = sorted(values, key=lambda v: (abs(v - centre), v))[:k]
    return sum(chosen) / k


def _krum_scores(rows: Rows, f: int, active: list[int], min_one: bool = False) -> dict:
    k = len(active) - f - 2
    if min_one:
        k = max(1, k)
    scores = {}
    for i in active:
        dists = sorted(_sqdist(rows[i], rows[j]) for j in active if j != i)
        scores[i] = sum(dists[: max(k, 0)])
    return scores


def ref_krum(rows: Rows, f: int) -> list[float]:
    return ref_multikrum(rows, f, m=1)


def ref_multikrum(rows: Rows, f: int, m: int | None = None) -> list[float]:
    m = len(rows) - f if m is None else m
    scores = _krum_scores(rows, f, list(range(len(rows))))
    best = sorted(scores, key=lambda i: (scores[i], i))[:m]  # ties: lower index
    return _mean_rows([rows[i] for i in best])


def ref_bulyan(rows: Rows, f: int) -> list[float]:
    n = len(rows)
    theta, active, chosen = n - 2 * f, list(range(n)), []
    for _ in range(theta):
        if len(active) == 1:
            best = active[0]
        else:
            scores = _krum_scores(rows, f, active, min_one=True)
            best = min(active, key=lambda i: (scores[i], i))  # argmin: lower index
        chosen.append(best)
        active.remove(best)
    selected = [rows[i] for i in chosen]
    beta = theta - 2 * f
    out = []
    for k in range(len(rows[0])):
        col = _column(selected, k)
        out.append(_closest_mean(col, statistics.median(col), beta))
    return out


def ref_median(rows: Rows, f: int) -> list[float]:
    return [statistics.median(_column(rows, k)) for k in range(len(rows[0]))]


def ref_trimmed_mean(rows: Rows, f: int, b: int | None = None) -> list[float]:
    b = f if b is None else b
    n = len(rows)
    return [sum(sorted(_column(rows, k))[b : n - b]) / (n - 2 * b) for k in range(len(rows[0]))]


def ref_meamed(rows: Rows, f: int) -> list[float]:
    out = []
    for k in range(len(rows[0])):
        col = _column(rows, k)
        out.append(_closest_mean(col, statistics.median(col), len(rows) - f))
    return out


def ref_phocas(rows: Rows, f: int, b: int | None = None) -> list[float]:
    b = f if b is None else b
    n = len(rows)
    out = []
    for k in range(len(rows[0])):
        col = _column(rows, k)
        centre = sum(sorted(col)[b : n - b]) / (n - 2 * b)
        out.append(_closest_mean(col, centre, n - b))
    return out


def ref_geometric_median(
    rows: Rows, f: int, nu: float = 1e-6, max_iter: int = 100, tol: float = 1e-6
) -> list[float]:
    n = len(rows)
    v = ref_median(rows, 0)

    def dists(v):
        return [math.sqrt(_sqdist(row, v)) for row in rows]

    dist = dists(v)
    objective = sum(dist) / n
    for _ in range(max_iter):
        beta = [1.0 / n / max(nu, d) for d in dist]
        total = sum(beta)
        v = [sum(b * row[k] for b, row in zip(beta, rows)) / total for k in range(len(v))]
        dist = dists(v)
        previous, objective = objective, sum(dist) / n
        if tol > 0 and abs(previous - objective) <= tol * objective:
            break
    return v


def ref_centered_clip(
    rows: Rows, f: int, tau: float = 10.0, iterations: int = 5, init=None
) -> list[float]:
    n = len(rows)
    v = ref_median(rows, 0) if init is None else list(init)
    for _ in range(iterations):
        step = [0.0] * len(v)
        for row in rows:
            z = [a - b for a, b in zip(row, v)]
            norm = math.sqrt(sum(c * c for c in z))
            scale = 1.0 if norm <= tau else tau / norm
            step = [s + scale * c / n for s, c in zip(step, z)]
        v = [a + s for a, s in zip(v, step)]
    return v


def ref_sign_majority(rows: Rows, f: int) -> list[float]:
    out = []
    for k in range(len(rows[0])):
        votes = sum((v > 0) - (v < 0) for v in _column(rows, k))
        out.append(float((votes > 0) - (votes < 0)))
    return out


def ref_mda(rows: Rows, f: int) -> list[float]:
    n = len(rows)
    best, best_diam = None, math.inf
    for left_out in itertools.combinations(range(n), f):  # lexicographic, like the rule
        keep = [i for i in range(n) if i not in left_out]
        diam = max((_sqdist(rows[i], rows[j]) for i in keep for j in keep), default=0.0)
        if diam < best_diam:
            best, best_diam = keep, diam
    return _mean_rows([rows[i] for i in best])


# --------------------------------------------------------------------------- the table
@dataclass
class RuleCase:
    """One rule and what the generic tests may expect of it.

    Attributes:
        name: canonical registry name.
        configs: valid ``(n, f)`` pairs; the first is the default test size.
        min_n: smallest n the rule accepts for a given f (the documented bound).
        reference: Python-loop implementation ``ref(rows, f, **params) -> list``.
        params: keyword params passed in every test.
        translation: ``rule(x + t) == rule(x) + t``.
        scaling: ``"equivariant"`` (``rule(c x) == c rule(x)``, c > 0), ``"invariant"``
            (``rule(c x) == rule(x)``) or ``None``.
        outliers: where the output stays when ``f`` rows are far or non-finite: ``"box"``
            (honest bounding box), ``"ball"`` (honest mean +- a few honest diameters) or
            ``"finite"``.
        box_any: the output stays in the honest box whatever the ``f`` other rows hold.
        aliases: spellings that must resolve to ``name``.
        info: whether ``aggregate`` returns the selected rows.
        order_ties: configs at which the rule ties by construction and breaks the tie by row
            index (Bulyan's picks with one neighbour scored, ``f <= 2``): no permutation test.
        path: ``"default"`` (the numba kernels of the coordinate-wise rules where numba is
            installed) or ``"torch"`` (their pure-torch fallback forced, id ``name@torch``).
    """

    name: str
    configs: list[tuple[int, int]]
    min_n: Callable[[int], int]
    reference: Callable[..., list[float]]
    params: dict[str, Any] = field(default_factory=dict)
    translation: bool = True
    scaling: str | None = "equivariant"
    outliers: str = "box"
    box_any: bool = False
    aliases: tuple[str, ...] = ()
    info: bool = False
    order_ties: tuple[tuple[int, int], ...] = ()
    path: str = "default"

    @property
    def fn(self):
        rule = AGGREGATORS.get(self.name)
        if self.path == "default":
            return rule

        def on_torch_path(*args, **kwargs):
            with _select.torch_fallback():
                return rule(*args, **kwargs)

        return on_torch_path

    def __repr__(self) -> str:  # readable pytest ids
        return self.name if self.path == "default" else f"{self.name}@{self.path}"


RULES: list[RuleCase] = [
    RuleCase("krum", [(9, 2), (7, 2), (5, 1), (4, 0)], lambda f: 2 * f + 3, ref_krum, info=True),
    RuleCase(
        "multikrum",
        [(9, 2), (11, 3), (5, 1)],
        lambda f: 2 * f + 3,
        ref_multikrum,
        aliases=("multi-krum", "multi_krum", "Multi-Krum"),
        info=True,
    ),
    RuleCase(
        "bulyan",
        [(11, 2), (7, 1), (9, 1), (3, 0), (15, 3)],
        lambda f: 4 * f + 3,
        ref_bulyan,
        info=True,
        order_ties=((11, 2), (7, 1), (9, 1)),
    ),
    RuleCase(
        "median",
        [(9, 2), (8, 2), (5, 2), (2, 0)],
        lambda f: 2 * f + 1,
        ref_median,
        box_any=True,
        aliases=("coordinate_median", "coord-median", "cwmed", "coordinate-wise-median"),
    ),
    RuleCase(
        "trimmed_mean",
        [(9, 2), (8, 3), (5, 2)],
        lambda f: 2 * f + 1,
        ref_trimmed_mean,
        box_any=True,
        aliases=("cwtm", "coordinate_trimmed_mean"),
    ),
    RuleCase("meamed", [(9, 2), (8, 3), (5, 2)], lambda f: 2 * f + 1, ref_meamed),
    RuleCase("phocas", [(9, 2), (8, 3), (5, 2)], lambda f: 2 * f + 1, ref_phocas),
    RuleCase(
        "geometric_median",
        [(9, 2), (8, 3), (5, 2)],
        lambda f: 2 * f + 1,
        ref_geometric_median,
        params={"tol": 0.0, "max_iter": 60},
        outliers="ball",
        aliases=("geomed", "rfa", "geo_median"),
    ),
    RuleCase(
        "centered_clip",
        [(9, 2), (8, 3), (5, 2)],
        lambda f: 2 * f + 1,
        ref_centered_clip,
        params={"tau": 1.0, "iterations": 5},
        scaling=None,
        outliers="ball",
        aliases=("cclip", "centeredclip"),
    ),
    RuleCase(
        "sign_majority",
        [(9, 2), (8, 3), (5, 2)],
        lambda f: 2 * f + 1,
        ref_sign_majority,
        translation=False,
        scaling="invariant",
        outliers="finite",
        aliases=("signsgd", "sign_sgd", "majority_vote"),
    ),
    RuleCase("mda", [(9, 2), (8, 3), (5, 2)], lambda f: 2 * f + 1, ref_mda, info=True),
]

# Rules with a coordinate-wise phase (aggregators._select): every generic test runs them again
# with the pure-torch fallback forced (ids "name@torch"); the default rows use the numba kernels
# where numba is installed.
SELECT_RULES = (
    "median",
    "trimmed_mean",
    "meamed",
    "phocas",
    "bulyan",
    "geometric_median",
    "centered_clip",
)
RULES += [dataclasses.replace(case, path="torch") for case in RULES if case.name in SELECT_RULES]

RULE_IDS = [repr(case) for case in RULES]


def rows_of(x: torch.Tensor) -> Rows:
    return x.double().cpu().tolist()


def honest_rows(n: int, d: int, seed: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Random rows with an offset and unequal spreads (no ties in practice)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * (1 + torch.arange(d)) + 3.0
    return x.to(dtype=dtype, device=device)
