"""The cases ``benchmarks/aggregators.py`` times: each rule, its floor, and ByzFL's counterpart.

A :class:`Case` is one call of a shieldwall aggregator or pre-aggregator on ``(x, f)``, the
floor it is compared with (see the benchmark's docstring for what each floor measures), the
distance rules' naive pair-loop reference, and the same rule in ByzFL (``byzfl``, built from
ByzFL's namespace and ``f``) where it has one. ``CASE_ALIASES`` maps the short names
``--rules`` accepts to label prefixes.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
from byzfl_import import import_byzfl

from shieldwall.aggregators import AGGREGATORS
from shieldwall.preaggregators import PREAGGREGATORS

GEOMED_ITERS = 10
CCLIP_ITERS = 5


@dataclass
class Case:
    label: str
    call: Callable[[torch.Tensor, int], object]
    floor: str  # "gemm", "median", "median_theta", "mean", "iters", "clone", ...
    iters: int = 1
    naive: Callable[[torch.Tensor, int], object] | None = None
    byzfl: Callable[[object, int], Callable[[torch.Tensor], object]] | None = None
    feasible: Callable[[int, int], bool] = lambda n, f: True


def _agg(name: str, **params):
    fn = AGGREGATORS.get(name)
    return lambda x, f: fn(x, f, **params)


def _pre(name: str, **params):
    fn = PREAGGREGATORS.get(name)
    return lambda x, f: fn(x, f, **params)


def naive_krum_scores(x: torch.Tensor, f: int) -> list[float]:
    """Krum scores with a Python loop over pairs of rows (the reference the GEMM replaces)."""
    n = x.shape[0]
    dist = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            dist[i][j] = dist[j][i] = float((x[i] - x[j]).pow(2).sum())
    k = n - f - 2
    return [sum(sorted(dist[i][:i] + dist[i][i + 1 :])[:k]) for i in range(n)]


def naive_multikrum(x: torch.Tensor, f: int) -> torch.Tensor:
    scores = naive_krum_scores(x, f)
    best = sorted(range(x.shape[0]), key=scores.__getitem__)[: x.shape[0] - f]
    return x[best].mean(dim=0)


def _bulyan_phase(x: torch.Tensor, f: int):
    """Bulyan's second phase alone, on the first n - 2f rows as the selection."""
    from shieldwall.aggregators.bulyan import bulyan_coordinate_phase

    theta = x.shape[0] - 2 * f
    selected = torch.arange(theta, device=x.device)
    return bulyan_coordinate_phase(x, selected, theta - 2 * f)


def _cclip_init(x: torch.Tensor, f: int):
    return AGGREGATORS.get("centered_clip")(
        x, f, iterations=CCLIP_ITERS, init=torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    )


CASES = [
    Case("krum", _agg("krum"), "gemm", naive=naive_krum_scores, byzfl=lambda B, f: B.Krum(f=f)),
    Case(
        "multikrum",
        _agg("multikrum"),
        "gemm",
        naive=naive_multikrum,
        byzfl=lambda B, f: B.MultiKrum(f=f),
    ),
    Case("bulyan", _agg("bulyan"), "gemm+median_theta"),
    Case("bulyan:coordinate-phase", lambda x, f: _bulyan_phase(x, f), "median_theta"),
    Case(
        "mda",
        _agg("mda"),
        "gemm",
        byzfl=lambda B, f: B.MDA(f=f),
        feasible=lambda n, f: math.comb(n, f) <= 100_000,
    ),
    Case("median", _agg("median"), "median", byzfl=lambda B, f: B.Median()),
    Case("trimmed_mean", _agg("trimmed_mean"), "median", byzfl=lambda B, f: B.TrMean(f=f)),
    Case("meamed", _agg("meamed"), "median", byzfl=lambda B, f: B.Meamed(f=f)),
    Case("phocas", _agg("phocas"), "median"),
    Case(
        f"geomed(T={GEOMED_ITERS})",
        _agg("geomed", max_iter=GEOMED_ITERS, tol=0.0),
        "iters",
        iters=GEOMED_ITERS,
        byzfl=lambda B, f: B.GeometricMedian(nu=1e-6, T=GEOMED_ITERS),
    ),
    Case("geomed(default)", _agg("geomed"), "median"),
    Case(
        f"cclip(L={CCLIP_ITERS},init=median)",
        _agg("cclip", iterations=CCLIP_ITERS),
        "iters",
        iters=CCLIP_ITERS,
    ),
    Case(
        f"cclip(L={CCLIP_ITERS},init=0)",
        _cclip_init,
        "iters",
        iters=CCLIP_ITERS,
        byzfl=lambda B, f: _ByzflCClip(B, CCLIP_ITERS),
    ),
    Case("sign_majority", _agg("sign_majority"), "mean"),
    Case("pre:nnm", _pre("nnm"), "gemm", byzfl=lambda B, f: B.NNM(f=f)),
    Case(
        "pre:bucketing(s=2)", _pre("bucketing", s=2), "clone", byzfl=lambda B, f: B.Bucketing(s=2)
    ),
    Case(
        "pre:clipping",
        _pre("clipping", c=1.0),
        "clone",
        byzfl=lambda B, f: _Copying(B.Clipping(c=1.0)),
    ),
    Case("pre:arc", _pre("arc"), "clone", byzfl=lambda B, f: _Copying(B.ARC(f=f))),
]

CASE_ALIASES = {
    "geomed": "geomed(",
    "cclip": "cclip(",
    "nnm": "pre:nnm",
    "arc": "pre:arc",
    "clipping": "pre:clipping",
    "bucketing": "pre:bucketing",
}


class _ByzflCClip:
    """ByzFL's CenteredClipping keeps its centre between calls: a fresh one for every call."""

    def __init__(self, B, iters):
        self.B, self.iters = B, iters

    def __call__(self, x):
        # m=None starts from zeros (its type check rejects every explicit m in 0.0.11).
        return self.B.CenteredClipping(L=self.iters, tau=10.0)(x)


class _Copying:
    """ByzFL's Clipping/ARC modify their input in place: time them on a copy, as ours copies."""

    def __init__(self, rule):
        self.rule = rule

    def __call__(self, x):
        return self.rule(x.clone())


def load_byzfl():
    """ByzFL's aggregators and pre-aggregators as one namespace, or ``None``."""
    modules = import_byzfl("aggregators.aggregators", "aggregators.preaggregators")
    if modules is None:
        return None
    aggs, pres = modules
    public = {k: v for m in (aggs, pres) for k, v in vars(m).items() if not k.startswith("_")}
    module = types.SimpleNamespace(**public)
    try:
        from importlib.metadata import version

        module.version = version("byzfl")
    except Exception:
        module.version = "?"
    return module
