"""Cross-check of the rules and attacks that ByzFL also implements, against ByzFL itself.

ByzFL (EPFL, ``pip install --no-deps byzfl==0.0.11``) is an independent implementation: every
pair below feeds both the same random rows (several seeds and shapes) and asserts the same
output. ByzFL keeps NumPy float64 input in float64 but casts torch input to float32, so the
deterministic pairs go through its NumPy path and are compared at float64 tolerance; only the
pairs that draw from torch's RNG (bucketing's permutation, the Gaussian attack) use its torch
path, in float32.

Where the two follow different documented conventions, the parameters are mapped so that both
compute the same quantity; each mapping is commented where it is made. Not cross-checked:
ByzFL's CAF and SMEA (no counterpart here; both also start from a random vector), MoNNA as a
rule (checked as a row of NNM instead), ``Optimal_ALittleIsEnough`` and
``Optimal_InnerProductManipulation`` (a different line search from
:mod:`shieldwall.attacks._adaptive`) and ``LabelFlipping`` (a data attack here).

ByzFL's package ``__init__`` imports its benchmark and so torchvision, which is not installed;
its aggregators and attacks need neither, so the loader below registers a bare ``byzfl`` package
on the installed folder just long enough to import those submodules.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from shieldwall.aggregators import AGGREGATORS
from shieldwall.attacks import ATTACKS, AttackContext
from shieldwall.attacks.alie import alie_z
from shieldwall.preaggregators import PREAGGREGATORS

SKIP_REASON = "byzfl not installed: pip install --no-deps byzfl==0.0.11"


def _load_byzfl() -> tuple[types.ModuleType, types.ModuleType] | None:
    """ByzFL's ``aggregators`` package and ``attacks.attacks`` module, or ``None``."""
    before = set(sys.modules)
    if "byzfl" in sys.modules:  # already imported (or blocked with sys.modules["byzfl"] = None)
        added = False
    else:
        spec = importlib.util.find_spec("byzfl")
        if spec is None or not spec.submodule_search_locations:
            return None
        package = types.ModuleType("byzfl")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["byzfl"] = package
        added = True
    try:
        aggregators = importlib.import_module("byzfl.aggregators")
        attacks = importlib.import_module("byzfl.attacks.attacks")
    except ImportError:
        return None
    finally:
        if added:  # do not leave the bare package behind for other test modules
            for name in set(sys.modules) - before:
                if name == "byzfl" or name.startswith("byzfl."):
                    del sys.modules[name]
    return aggregators, attacks


_loaded = _load_byzfl()
if _loaded is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)
bz_agg, bz_att = _loaded

F64 = torch.float64
TIGHT = {"rtol": 1e-12, "atol": 1e-12}  # float64 on both sides
FLOAT32 = {"rtol": 1e-6, "atol": 1e-6}  # ByzFL's torch path computes in float32

# (seed, n, f, d): small n, odd and even, f up to the largest n >= 2f + 1 allows.
CASES = [(0, 7, 1, 5), (1, 9, 2, 13), (2, 10, 3, 24), (3, 12, 2, 50), (4, 15, 4, 8), (5, 11, 5, 17)]
CASE_IDS = [f"n{n}-f{f}-d{d}-s{s}" for s, n, f, d in CASES]


def rows(seed: int, n: int, f: int, d: int) -> torch.Tensor:
    """``(n, d)`` float64 Gaussian rows of random scales, ``f`` of them (at random positions)
    scaled and shifted away from the others so that the selections are not trivial."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64) * torch.exp(torch.randn(n, 1, generator=g))
    out = torch.randperm(n, generator=g)[:f]
    x[out] = 4 * x[out] + 3 * torch.randn(d, generator=g, dtype=F64)
    return x


def np_rows(x: torch.Tensor) -> np.ndarray:
    """A float64 NumPy copy (some ByzFL pre-aggregators write into their input)."""
    return x.numpy().copy()


def close(ours: torch.Tensor, theirs, **tol) -> None:
    theirs = torch.as_tensor(np.asarray(theirs) if not torch.is_tensor(theirs) else theirs)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), **(tol or TIGHT))


def attack(name: str, honest: torch.Tensor, m: int, ctx: AttackContext, **params):
    return ATTACKS.get(name)(honest, m, ctx, **params)


# --------------------------------------------------------------------------- aggregators
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_mean(case):
    x = rows(*case)
    close(AGGREGATORS.get("mean")(x, case[2]), bz_agg.Average()(np_rows(x)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_median(case, select_path):
    # Both take the mean of the two middle values for even n (NumPy's median).
    x = rows(*case)
    close(AGGREGATORS.get("median")(x, case[2]), bz_agg.Median()(np_rows(x)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_trimmed_mean(case, select_path):
    # Both trim f values from *each* side (Yin et al. 2018, b = f).
    _, n, f, _ = case
    x = rows(*case)
    for trim in sorted({0, f}):
        close(AGGREGATORS.get("trimmed_mean")(x, trim), bz_agg.TrMean(f=trim)(np_rows(x)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_meamed(case, select_path):
    _, n, f, _ = case
    x = rows(*case)
    close(AGGREGATORS.get("meamed")(x, f), bz_agg.Meamed(f=f)(np_rows(x)))


def _krum_f(n: int, f: int) -> int:
    return min(f, (n - 3) // 2)  # our bound n >= 2f + 3


# Krum's choice depends on the neighbour count only now and then (Multi-Krum's set even less
# often), so besides CASES the Krum pairs also run on many small low-dimensional draws.
KRUM_SWEEP = [(100 + seed, 7 + seed % 6, (4 + seed % 6) // 2, 2 + seed % 3) for seed in range(60)]


def _krum_inputs():
    for case in CASES + KRUM_SWEEP:
        _, n, f, _ = case
        yield rows(*case), n, _krum_f(n, f)


def test_krum():
    # Blanchard et al. 2017 score x_i by the n - f - 2 nearest *other* rows (ours). ByzFL cites
    # that paper but its Krum_f sums over the n - f nearest rows counting x_i itself, i.e.
    # n - f - 1 others (a deviation from the paper, kept out of ours), and averages instead of
    # summing (same argmin). So ours at f is ByzFL's at f + 1; ByzFL's bound 2(f + 1) < n is then
    # exactly ours, n >= 2f + 3.
    unmapped_differs = False
    for x, _, f in _krum_inputs():
        ours = AGGREGATORS.get("krum")(x, f)
        close(ours, bz_agg.Krum(f=f + 1)(np_rows(x)), rtol=0, atol=0)
        unmapped_differs |= not torch.equal(ours, torch.from_numpy(bz_agg.Krum(f=f)(np_rows(x))))
    assert unmapped_differs  # the shift of f is needed, not a no-op on these inputs


def test_multikrum():
    # Same neighbour count shift as Krum; ByzFL's MultiKrum_f averages the n - f best rows, so
    # ours at (f, m = n - f - 1) is ByzFL's at f + 1 (our default m is n - f).
    unmapped_differs = False
    for x, n, f in _krum_inputs():
        ours = AGGREGATORS.get("multikrum")(x, f, m=n - f - 1)
        close(ours, bz_agg.MultiKrum(f=f + 1)(np_rows(x)))
        same_m = AGGREGATORS.get("multikrum")(x, f, m=n - f)
        theirs_same_m = torch.from_numpy(bz_agg.MultiKrum(f=f)(np_rows(x)))
        unmapped_differs |= not torch.allclose(same_m, theirs_same_m, rtol=1e-9, atol=1e-9)
    assert unmapped_differs  # equal m but n - f - 2 vs n - f - 1 neighbours: some set differs


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_mda(case):
    _, n, f, _ = case
    x = rows(*case)
    close(AGGREGATORS.get("mda")(x, f), bz_agg.MDA(f=f)(np_rows(x)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize(("nu", "iterations"), [(0.1, 3), (1e-6, 25)])
def test_geometric_median(case, nu, iterations):
    # The same smoothed Weiszfeld step (Pillutla et al., RFA): beta_i = 1 / max(nu, ||v - x_i||).
    # ByzFL starts from the origin and runs exactly T steps: ours with init="zeros", tol=0
    # (our default start is the coordinate-wise median and stops on a relative tolerance).
    _, n, f, _ = case
    x = rows(*case)
    ours = AGGREGATORS.get("geometric_median")(
        x, f, nu=nu, max_iter=iterations, tol=0.0, init="zeros"
    )
    close(ours, bz_agg.GeometricMedian(nu=nu, T=iterations)(np_rows(x)))


def test_geometric_median_drops_infinite_rows():
    # Both leave rows holding Inf out of the iteration (ours spends one unit of f on each).
    x = rows(6, 9, 2, 11)
    x[[1, 4], 3] = float("inf")
    ours = AGGREGATORS.get("geometric_median")(x, 2, nu=0.1, max_iter=4, tol=0.0, init="zeros")
    close(ours, bz_agg.GeometricMedian(nu=0.1, T=4)(np_rows(x)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize(("tau", "iterations"), [(1.0, 1), (2.5, 3), (100.0, 2)])
def test_centered_clip(case, tau, iterations):
    # v_{l+1} = v_l + (1/n) sum_i clip_tau(x_i - v_l) (Karimireddy et al. 2021) on both sides.
    # ByzFL's v_0 is m = zeros on the first call and its previous output afterwards (its m
    # argument cannot be set in 0.0.11: the type check rejects every value), so ours gets
    # init=zeros, then init=<previous aggregate>; our own default start is the median.
    _, n, f, d = case
    x, y = rows(*case), rows(case[0] + 100, n, f, d)
    theirs = bz_agg.CenteredClipping(L=iterations, tau=tau)
    cclip = AGGREGATORS.get("centered_clip")
    first = cclip(x, f, tau=tau, iterations=iterations, init=torch.zeros(d, dtype=F64))
    close(first, theirs(np_rows(x)))
    close(cclip(y, f, tau=tau, iterations=iterations, init=first), theirs(np_rows(y)))


# --------------------------------------------------------------------------- pre-aggregators
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_nnm_and_monna(case):
    # Both mix each row with its n - f nearest rows, itself included. ByzFL's MoNNA_{f, idx} is
    # that mean for row idx alone, i.e. row idx of NNM.
    _, n, f, _ = case
    x = rows(*case)
    ours = PREAGGREGATORS.get("nnm")(x, f)
    close(ours, bz_agg.NNM(f=f)(np_rows(x)))
    for idx in (0, n // 2, n - 1):
        close(ours[idx], bz_agg.MoNNA(f=f, idx=idx)(np_rows(x)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_static_clipping(case):
    x = rows(*case)
    norms = x.norm(dim=1)
    for c in (float(norms.median()), float(norms.max()) + 1.0, float(norms.min()) / 2):
        close(PREAGGREGATORS.get("clipping")(x, case[2], c=c), bz_agg.Clipping(c=c)(np_rows(x)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_arc(case):
    # Both clip the k = floor(2 (f/n)(n - f)) rows of largest norm to the (k+1)-th largest norm
    # (Allouah et al. 2024, Algorithm 2). ByzFL computes k in floating point, ours in integers;
    # the two agree for every 0 <= f < n/2 (checked for n < 200 when this test was written).
    _, n, f, _ = case
    x = rows(*case)
    for byz in sorted({0, 1, f}):
        close(PREAGGREGATORS.get("arc")(x, byz), bz_agg.ARC(f=byz)(np_rows(x)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_bucketing(case, s):
    # Same permutation: both draw torch.randperm(n) (ours from the generator given, ByzFL's from
    # the global one: same seed, same numbers) and average consecutive runs of s permuted rows,
    # the last bucket holding the n mod s rest. ByzFL's torch path computes in float32.
    seed, n, f, _ = case
    x = rows(*case).float()
    ours = PREAGGREGATORS.get("bucketing")(x, f, s=s, generator=torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theirs = bz_agg.Bucketing(s=s)(x.clone())
    assert ours.shape == (-(-n // s), x.shape[1])
    close(ours, theirs, **FLOAT32)


# --------------------------------------------------------------------------- attacks
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_sign_flip(case):
    # Ours: Byzantine worker i sends -h_{i mod h}, its *own* honest update negated; ByzFL's
    # SignFlipping negates the mean of the vectors it is given. They agree when ByzFL is given
    # the worker's own update alone, and when ours is given the honest mean as its only row.
    seed, n, f, _ = case
    honest = rows(*case)
    ctx = AttackContext(n=n + f, f=f)
    ours = attack("sign_flip", honest, n, ctx)
    for i in range(n):
        close(ours[i], bz_att.SignFlipping()(np_rows(honest[i : i + 1])))
    theirs = bz_att.SignFlipping()(np_rows(honest))
    close(attack("sign_flip", honest.mean(dim=0, keepdim=True), f, ctx), np.stack([theirs] * f))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("epsilon", [0.1, 0.5, 2.0])
def test_ipm(case, epsilon):
    # -epsilon * mean(honest) (Xie et al. 2019); ByzFL calls epsilon tau (default 2.0, ours 0.1).
    _, n, f, _ = case
    honest = rows(*case)
    ours = attack("ipm", honest, f, AttackContext(n=n + f, f=f), epsilon=epsilon)
    theirs = bz_att.InnerProductManipulation(tau=epsilon)(np_rows(honest))
    close(ours, np.stack([theirs] * f))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_alie(case):
    # Ours sends mu - z * sigma, ByzFL mu + tau * sigma: tau = -z. Both use the unbiased
    # (h - 1) coordinate-wise standard deviation (ByzFL's docstring writes 1/n, its code uses
    # ddof=1). ByzFL has no rule for z (tau defaults to 1.5); ours defaults to Baruch et al.'s
    # z_max = Phi^-1((n - s)/n), s = floor(n/2 + 1) - f, so that one is passed explicitly.
    _, h, f, _ = case
    honest = rows(*case)
    n = h + f
    ctx = AttackContext(n=n, f=f)
    for z in (0.0, 1.5, -0.7):
        theirs = bz_att.ALittleIsEnough(tau=-z)(np_rows(honest))
        close(attack("alie", honest, f, ctx, z=z), np.stack([theirs] * f))
    theirs = bz_att.ALittleIsEnough(tau=-alie_z(n, f))(np_rows(honest))
    close(attack("alie", honest, f, ctx), np.stack([theirs] * f))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_mimic(case):
    # ByzFL's Mimic(epsilon) copies honest row epsilon: ours with target=epsilon (our default
    # target is the paper's principal-direction heuristic).
    _, h, f, _ = case
    honest = rows(*case)
    for target in (0, h // 2, h - 1):
        ours = attack("mimic", honest, f, AttackContext(n=h + f, f=f), target=target)
        close(ours, np.stack([bz_att.Mimic(epsilon=target)(np_rows(honest))] * f))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 1.0), (0.5, 3.0)])
def test_gaussian(case, mu, sigma):
    # Both draw torch.randn(d) * sigma + mu in float32 (ours from ctx.generator, ByzFL's torch path
    # from the global generator): same seed, same row. ByzFL draws one row that every Byzantine
    # worker sends, ours one per worker, so only the first is compared.
    seed, h, f, _ = case
    honest = rows(*case).float()
    ctx = AttackContext(n=h + f, f=f, generator=torch.Generator().manual_seed(seed))
    ours = attack("gaussian", honest, 1, ctx, mu=mu, sigma=sigma)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theirs = bz_att.Gaussian(mu=mu, sigma=sigma)(honest.clone())
    close(ours[0], theirs, rtol=0, atol=0)


def test_inf():
    honest = rows(7, 5, 0, 6)
    ours = attack("inf", honest, 2, AttackContext(n=7, f=2))
    close(ours, np.stack([bz_att.Inf()(np_rows(honest))] * 2), rtol=0, atol=0)
