"""Update attacks: exact values on hand-checked inputs and the contract every attack keeps."""

from __future__ import annotations

import math

import pytest
import torch

from shieldwall.aggregators import AGGREGATORS
from shieldwall.attacks import ATTACKS, AttackContext
from shieldwall.attacks._adaptive import aggregate_damage, coarse_to_fine_max
from shieldwall.attacks.alie import alie_z
from shieldwall.attacks.minmax import deviation

UPDATE_ATTACKS = sorted(e.name for e in ATTACKS if e.meta.get("kind") == "update")


def median_rule(updates: torch.Tensor, f: int) -> torch.Tensor:
    """Local stand-in for a robust rule (independent of the aggregator work)."""
    return updates.median(dim=0).values


def mean_rule(updates: torch.Tensor, f: int) -> torch.Tensor:
    return AGGREGATORS.get("mean")(updates, f)


def make_ctx(n: int = 7, f: int = 2, seed: int = 0, **kw) -> AttackContext:
    return AttackContext(n=n, f=f, generator=torch.Generator().manual_seed(seed), **kw)


def honest_rows(h: int = 5, d: int = 6, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(h, d, generator=torch.Generator().manual_seed(seed), dtype=dtype) + 0.5


# Three honest rows whose coordinate statistics are exact:
#   column 0: [0, 2, 4]  → mean 2, unbiased std sqrt((4 + 0 + 4) / 2) = 2
#   column 1: [1, 1, 1]  → mean 1, std 0
#   column 2: [-3, 0, 3] → mean 0, std sqrt((9 + 0 + 9) / 2) = 3
SMALL = torch.tensor([[0.0, 1.0, -3.0], [2.0, 1.0, 0.0], [4.0, 1.0, 3.0]])


# --------------------------------------------------------------------------- ALIE


def test_alie_z_matches_the_paper_formula():
    # n = 50, f = 24: s = floor(50/2 + 1) - 24 = 26 - 24 = 2; (n - s)/n = 48/50 = 0.96;
    # z = Phi^-1(0.96) = 1.750686...
    assert alie_z(50, 24) == pytest.approx(1.7506860712521695, abs=1e-12)
    # n = 25, f = 5: s = floor(13.5) - 5 = 8; (25 - 8)/25 = 0.68; z = Phi^-1(0.68) = 0.467699...
    assert alie_z(25, 5) == pytest.approx(0.46769879911450835, abs=1e-12)
    # n = 10, f = 5: s = 6 - 5 = 1; 9/10 = 0.9; z = Phi^-1(0.9) = 1.281552...
    assert alie_z(10, 5) == pytest.approx(1.2815515655446004, abs=1e-12)


def test_alie_z_undefined_without_enough_supporters():
    with pytest.raises(ValueError, match="pass z explicitly"):
        alie_z(10, 6)  # s = 6 - 6 = 0


def test_alie_output_is_mean_minus_z_std():
    ctx = make_ctx(n=25, f=5)
    out = ATTACKS.get("alie")(SMALL, 2, ctx)
    z = 0.46769879911450835
    expected = torch.tensor([2.0 - 2.0 * z, 1.0, 0.0 - 3.0 * z])
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, expected.expand(2, 3))
    explicit = ATTACKS.get("lie")(SMALL, 1, ctx, z=1.5)
    torch.testing.assert_close(explicit, torch.tensor([[-1.0, 1.0, -4.5]]))


def test_alie_with_one_honest_row_uses_zero_spread():
    out = ATTACKS.get("alie")(SMALL[:1], 2, make_ctx(), z=1.0)
    torch.testing.assert_close(out, SMALL[:1].expand(2, 3))


# --------------------------------------------------------------------------- IPM


def test_ipm_is_negative_scaled_mean():
    out = ATTACKS.get("inner_product_manipulation")(SMALL, 3, make_ctx())
    torch.testing.assert_close(out, torch.tensor([[-0.2, -0.1, 0.0]]).expand(3, 3))
    mean = SMALL.mean(dim=0)  # [2, 1, 0]
    assert float(out[0] @ mean) == pytest.approx(-0.5)  # -0.1 * (4 + 1)
    big = ATTACKS.get("ipm")(SMALL, 1, make_ctx(), epsilon=2.0)
    torch.testing.assert_close(big, torch.tensor([[-4.0, -2.0, 0.0]]))


def test_ipm_inner_product_negative_on_random_rows():
    honest = honest_rows()
    out = ATTACKS.get("ipm")(honest, 2, make_ctx())
    assert bool((out @ honest.mean(dim=0) < 0).all())


# --------------------------------------------------------------------------- flips and constants


def test_sign_flip_and_reversed_gradient():
    g = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    ctx = make_ctx()
    torch.testing.assert_close(
        ATTACKS.get("signflip")(g, 3, ctx), torch.tensor([[-1.0, 2.0], [-3.0, -0.5], [-1.0, 2.0]])
    )
    torch.testing.assert_close(
        ATTACKS.get("sign_flipping")(g, 1, ctx, scale=2.0), torch.tensor([[-2.0, 4.0]])
    )
    # ByzShield rev_grad: -100 * g
    torch.testing.assert_close(
        ATTACKS.get("rev_grad")(g, 2, ctx), torch.tensor([[-100.0, 200.0], [-300.0, -50.0]])
    )


def test_constant_is_byzshield_minus_100():
    out = ATTACKS.get("constant")(SMALL, 2, make_ctx())
    torch.testing.assert_close(out, torch.full((2, 3), -100.0))
    torch.testing.assert_close(
        ATTACKS.get("constant")(SMALL, 1, make_ctx(), value=3.0), torch.full((1, 3), 3.0)
    )


def test_fedml_zero_random_flip():
    g = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.5, -1.0]])
    ref = torch.tensor([0.25, -0.5, 2.0])
    ctx = make_ctx(reference=ref)
    torch.testing.assert_close(ATTACKS.get("zero")(g, 2, ctx), (-ref).expand(2, 3))
    # without a reference the global weights are zero, so the update is zero
    torch.testing.assert_close(ATTACKS.get("zero")(g, 1, make_ctx()), torch.zeros(1, 3))
    rows = ATTACKS.get("random")(
        torch.zeros(1, 4000), 3, make_ctx(reference=torch.full((4000,), 5.0))
    )
    weights = rows + 5.0  # back to weight space: w = u + w_global
    assert rows.shape == (3, 4000)
    assert float(weights.min()) >= -1.0 and float(weights.max()) < 1.0
    assert float(weights.min()) < -0.99 and float(weights.max()) > 0.99  # spans [-1, 1)
    torch.testing.assert_close(ATTACKS.get("flip")(g, 3, ctx), -g[[0, 1, 0]])


# --------------------------------------------------------------------------- noise


def test_gaussian_moments_and_params():
    rows = ATTACKS.get("gaussian")(torch.zeros(2, 20000), 2, make_ctx(), mu=3.0, sigma=0.5)
    assert float(rows.mean()) == pytest.approx(3.0, abs=0.02)
    assert float(rows.std()) == pytest.approx(0.5, abs=0.02)


def test_trivial_noise_adds_noise_to_own_update():
    g = honest_rows(h=2, d=5000)
    rows = ATTACKS.get("faulty")(g, 2, make_ctx(), sigma=0.1)
    assert float((rows - g).std()) == pytest.approx(0.1, abs=0.01)
    exact = ATTACKS.get("trivial_noise")(g, 2, make_ctx(), sigma=0.0)
    torch.testing.assert_close(exact, g)


# --------------------------------------------------------------------------- malformed


def test_malformed_rows():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    ctx = make_ctx()
    assert bool(ATTACKS.get("nan")(g, 2, ctx).isnan().all())
    assert bool((ATTACKS.get("inf")(g, 2, ctx) == math.inf).all())
    assert bool((ATTACKS.get("inf")(g, 1, ctx, negative=True) == -math.inf).all())
    huge = ATTACKS.get("huge")(g, 2, ctx).double()
    assert torch.isfinite(huge).all()
    torch.testing.assert_close(huge[0], torch.tensor([-0.6e30, -0.8e30], dtype=torch.float64))
    # zero own gradient → along -1/sqrt(d)
    torch.testing.assert_close(huge[1], torch.full((2,), -1e30 / math.sqrt(2), dtype=torch.float64))
    small = ATTACKS.get("huge")(g, 1, ctx, norm=10.0)
    torch.testing.assert_close(small, torch.tensor([[-6.0, -8.0]]))


# --------------------------------------------------------------------------- mimic


def test_mimic_copies_an_honest_row():
    honest = torch.tensor([[0.0, 0.0], [1.0, 0.1], [-1.0, -0.1], [10.0, 0.0]])
    ctx = make_ctx()
    # mean x = 2.5; |x - mean| = 2.5, 1.5, 3.5, 7.5 along the direction of largest variance
    torch.testing.assert_close(ATTACKS.get("mimic")(honest, 2, ctx), honest[[3, 3]])
    torch.testing.assert_close(ATTACKS.get("mimic")(honest, 1, ctx, target=1), honest[[1]])
    torch.testing.assert_close(ATTACKS.get("mimic")(honest, 1, ctx, target=-2), honest[[2]])
    a = ATTACKS.get("mimic")(honest, 3, make_ctx(seed=5), target="random")
    b = ATTACKS.get("mimic")(honest, 3, make_ctx(seed=5), target="random")
    torch.testing.assert_close(a, b)
    assert any(torch.equal(a[0], row) for row in honest)
    assert torch.equal(a[0], a[1]) and torch.equal(a[1], a[2])
    with pytest.raises(ValueError):
        ATTACKS.get("mimic")(honest, 1, ctx, target=4)


def test_mimic_default_is_an_honest_row_on_random_data():
    honest = honest_rows(h=6, d=10)
    out = ATTACKS.get("mimic")(honest, 2, make_ctx())
    assert any(torch.equal(out[0], row) for row in honest)


# --------------------------------------------------------------------------- min-max / min-sum


def _gamma(honest: torch.Tensor, row: torch.Tensor, perturbation: str) -> float:
    p = deviation(honest, perturbation)
    return float((honest.mean(dim=0) - row) @ p / (p @ p))


def test_minmax_hand_checked():
    # honest (0,0), (2,0): mean (1,0), unit vector (1,0), max pairwise distance 2.
    # b = (1 - g, 0) is at distances |1 - g|, |1 + g| → constraint 1 + g <= 2 → g* = 1.
    honest = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    out = ATTACKS.get("minmax")(honest, 2, make_ctx())
    gamma = _gamma(honest, out[0], "unit_vec")
    assert 1.0 - 1e-4 <= gamma <= 1.0
    # Min-Sum: (1 - g)^2 + (1 + g)^2 = 2 + 2 g^2 <= max_i sum_j d_ij^2 = 4 → g* = 1 as well
    out = ATTACKS.get("min_sum")(honest, 1, make_ctx())
    assert 1.0 - 1e-4 <= _gamma(honest, out[0], "unit_vec") <= 1.0


@pytest.mark.parametrize("perturbation", ["unit_vec", "std", "sign"])
def test_minmax_gamma_satisfies_constraint_and_is_maximal(perturbation):
    honest = honest_rows(h=6, d=8, dtype=torch.float64)
    out = ATTACKS.get("minmax")(honest, 2, make_ctx(), perturbation=perturbation)
    row = out[0]
    bound = torch.cdist(honest, honest).max()
    assert float(torch.cdist(row[None], honest).max()) <= float(bound) + 1e-9
    gamma = _gamma(honest, row, perturbation)
    assert 0 < gamma < 20.0
    p = deviation(honest, perturbation)
    bigger = honest.mean(dim=0) - (gamma + 1e-3) * p
    assert float(torch.cdist(bigger[None], honest).max()) > float(bound)


@pytest.mark.parametrize("bound", ["max", "min"])
def test_minsum_gamma_satisfies_constraint(bound):
    honest = honest_rows(h=6, d=8, dtype=torch.float64)
    out = ATTACKS.get("minsum")(honest, 1, make_ctx(), perturbation="std", bound=bound)
    scores = torch.cdist(honest, honest).square().sum(dim=1)
    threshold = scores.max() if bound == "max" else scores.min()
    assert float((honest - out[0]).square().sum()) <= float(threshold) + 1e-9
    gamma = _gamma(honest, out[0], "std")
    bigger = honest.mean(dim=0) - (gamma + 1e-3) * deviation(honest, "std")
    assert float((honest - bigger).square().sum()) > float(threshold)


def test_minmax_rejects_unknown_perturbation():
    with pytest.raises(ValueError, match="perturbation"):
        ATTACKS.get("minmax")(SMALL, 1, make_ctx(), perturbation="bogus")


# --------------------------------------------------------------------------- adaptive


def test_coarse_to_fine_finds_a_unimodal_maximum():
    best, value = coarse_to_fine_max(lambda x: -((x - 2.3) ** 2), 0.0, 5.0, 20)
    assert best == pytest.approx(2.3, abs=0.02)
    assert value <= 0.0


def test_adaptive_with_mean_picks_the_range_end_and_beats_default():
    honest = honest_rows(h=5, d=6)
    ctx = make_ctx(n=7, f=2, aggregator=mean_rule)
    # With the mean, the damage m·z·‖σ‖/n grows with z, so the best z is the range's end.
    out = ATTACKS.get("alie_adaptive")(honest, 2, ctx)
    mean, std = honest.mean(dim=0), honest.std(dim=0)
    torch.testing.assert_close(out[0], mean - 5.0 * std)
    plain = ATTACKS.get("alie")(honest, 2, ctx)
    assert aggregate_damage(honest, out, ctx) >= aggregate_damage(honest, plain, ctx)
    # IPM: damage m·(1 + eps)·‖mean‖/n, so eps = 10 (the range's end) beats eps = 0.1.
    out = ATTACKS.get("ipm_adaptive")(honest, 2, ctx)
    torch.testing.assert_close(out[0], -10.0 * mean)
    assert aggregate_damage(honest, out, ctx) > aggregate_damage(
        honest, ATTACKS.get("ipm")(honest, 2, ctx), ctx
    )


@pytest.mark.parametrize("name,plain", [("alie_adaptive", "alie"), ("ipm_adaptive", "ipm")])
def test_adaptive_against_median_is_at_least_as_damaging(name, plain):
    honest = honest_rows(h=7, d=5, seed=3)
    ctx = make_ctx(n=10, f=3, aggregator=median_rule)
    adaptive = ATTACKS.get(name)(honest, 3, ctx)
    baseline = ATTACKS.get(plain)(honest, 3, ctx)
    assert aggregate_damage(honest, adaptive, ctx) >= aggregate_damage(honest, baseline, ctx)


def test_adaptive_respects_budget_and_range():
    calls = []

    def counting(updates, f):
        calls.append(1)
        return updates.mean(dim=0)

    honest = honest_rows()
    ctx = make_ctx(aggregator=counting)
    out = ATTACKS.get("ipm_adaptive")(honest, 2, ctx, factor_range=(0.5, 2.0), num_evals=7)
    assert len(calls) <= 7
    torch.testing.assert_close(out[0], -2.0 * honest.mean(dim=0))


def test_adaptive_falls_back_without_aggregator():
    honest = honest_rows()
    ctx = make_ctx(n=7, f=2)
    torch.testing.assert_close(
        ATTACKS.get("alie_adaptive")(honest, 2, ctx), ATTACKS.get("alie")(honest, 2, ctx)
    )
    torch.testing.assert_close(
        ATTACKS.get("ipm_adaptive")(honest, 2, ctx), ATTACKS.get("ipm")(honest, 2, ctx)
    )


# --------------------------------------------------------------------------- registry and contract


def test_registry_names_aliases_and_meta():
    expected = {
        "gaussian": ("gaussian_noise", "noise"),
        "sign_flip": ("signflip", "sign_flipping"),
        "reversed_gradient": ("rev_grad", "reverse"),
        "alie": ("a_little_is_enough", "lie"),
        "ipm": ("inner_product_manipulation",),
        "trivial_noise": ("noise_injection", "faulty"),
        "label_flip": ("label_flipping",),
    }
    for name, aliases in expected.items():
        for alias in aliases:
            assert ATTACKS.canonical(alias) == name
    for name in [
        "constant",
        "nan",
        "inf",
        "huge",
        "mimic",
        "minmax",
        "minsum",
        "backdoor",
        "alie_adaptive",
        "ipm_adaptive",
        "zero",
        "random",
        "flip",
    ]:
        assert name in ATTACKS
    for entry in ATTACKS:
        assert entry.meta.get("kind") in ("update", "data")
        assert isinstance(entry.meta.get("omniscient"), bool)
    omniscient = {e.name for e in ATTACKS if e.meta.get("omniscient")}
    assert {"ipm", "mimic", "minmax", "minsum", "alie_adaptive", "ipm_adaptive"} <= omniscient
    assert not omniscient & {"alie", "sign_flip", "gaussian", "zero", "random", "flip"}


def _kwargs(name: str) -> dict:
    return {"z": 1.0} if name == "alie" else {}


@pytest.mark.parametrize("name", UPDATE_ATTACKS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract_shape_dtype_device_no_mutation(name, dtype):
    honest = honest_rows(h=5, d=6, dtype=dtype)
    before = honest.clone()
    ref = torch.linspace(-1, 1, 6, dtype=dtype)
    ctx = make_ctx(n=8, f=3, reference=ref, aggregator=median_rule, num_classes=10)
    out = ATTACKS.get(name)(honest, 3, ctx, **_kwargs(name))
    assert out.shape == (3, 6)
    assert out.dtype == dtype and out.device == honest.device
    assert torch.equal(honest, before)
    assert torch.equal(ref, torch.linspace(-1, 1, 6, dtype=dtype))
    out[:] = 0  # the result never aliases the input
    assert torch.equal(honest, before)
    empty = ATTACKS.get(name)(honest, 0, ctx, **_kwargs(name))
    assert empty.shape == (0, 6)


@pytest.mark.parametrize("name", UPDATE_ATTACKS)
def test_randomness_only_from_ctx_generator(name):
    honest = honest_rows()
    torch_state = torch.get_rng_state()
    kwargs = dict(_kwargs(name))
    if name == "mimic":
        kwargs["target"] = "random"
    a = ATTACKS.get(name)(honest, 3, make_ctx(seed=11, aggregator=median_rule), **kwargs)
    b = ATTACKS.get(name)(honest, 3, make_ctx(seed=11, aggregator=median_rule), **kwargs)
    assert torch.equal(torch.get_rng_state(), torch_state)
    torch.testing.assert_close(a, b, equal_nan=True)
    if ATTACKS.entry(name).meta.get("stochastic"):
        c = ATTACKS.get(name)(honest, 3, make_ctx(seed=12), **kwargs)
        assert not torch.equal(a, c)
        with pytest.raises(ValueError, match="generator"):
            ATTACKS.get(name)(honest, 3, AttackContext(n=7, f=2), **kwargs)


def test_generator_advances_between_rounds():
    ctx = make_ctx(seed=3)
    honest = honest_rows()
    first = ATTACKS.get("gaussian")(honest, 2, ctx)
    second = ATTACKS.get("gaussian")(honest, 2, ctx)
    assert not torch.equal(first, second)
