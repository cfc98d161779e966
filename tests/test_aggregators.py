"""Robust aggregators: hand-computed cases, agreement with loop references, errors, registry.

Generic properties (permutation, translation, outliers, dtype, mutation) are in
``test_aggregators_properties.py``; both read the table in ``test_aggregators_db.py``.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from test_aggregators_db import RULE_IDS, RULES, honest_rows, rows_of

from shieldwall.aggregators import AGGREGATORS, _kernels, aggregate
from shieldwall.aggregators.base import drop_nonfinite, pairwise_sq_distances, row_norms
from shieldwall.aggregators.bulyan import bulyan_with_info
from shieldwall.aggregators.krum import krum_with_info, multikrum_with_info
from shieldwall.aggregators.median import coordinate_median

T = torch.float64


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=T)


def close(actual: torch.Tensor, expected, atol: float = 1e-12) -> None:
    torch.testing.assert_close(
        actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0
    )


# --------------------------------------------------------------------------- hand-computed cases
def test_krum_exact():
    # 1-D rows 0, 1, 2, 10, 11 with n=5, f=1: each score sums the n-f-2 = 2 smallest squared
    # distances to other rows: 0 -> 1+4 = 5, 1 -> 1+1 = 2, 2 -> 1+4 = 5, 10 -> 1+64 = 65,
    # 11 -> 1+81 = 82. Row 1 wins.
    x = t([[0.0], [1.0], [2.0], [10.0], [11.0]])
    res = krum_with_info(x, 1)
    close(res.vector, [1.0])
    assert res.selected.tolist() == [1]
    close(res.scores, [5.0, 2.0, 5.0, 65.0, 82.0])
    close(AGGREGATORS.get("krum")(x, 1), [1.0])


def test_multikrum_exact():
    # Same scores; m=3 keeps rows 1 (2), then 0 and 2 (both 5): the tie goes to the lower index
    # (argmin's order). Mean of 0, 1, 2: 1. Default m = n - f = 4 adds row 3 (65): 3.25.
    x = t([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [10.0, 1.0], [11.0, 1.0]])
    res = multikrum_with_info(x, 1, m=3)
    assert res.selected.tolist() == [1, 0, 2]
    close(res.vector, [1.0, 1.0])
    close(AGGREGATORS.get("multi-krum")(x, 1), [3.25, 1.0])


def test_bulyan_exact(select_path):
    # n=7, f=1: theta = 5 picks by iterated Krum, then beta = 3 values nearest the median.
    # Rows 0, 1, 2, 3, 4, 100, 101. Ties in score go to the lower index (argmin, as Flower's
    # aggregate_bulyan); with r rows left, k = max(1, r - f - 2) neighbours are scored.
    # r=7, k=4: scores 0:30, 1:15, 2:10, 3:15, 4:30, 100/101 huge              -> pick 2
    # r=6, k=3 (0,1,3,4,100,101): 0:26, 1:1+4+9=14, 3:1+4+9=14, 4:26; tie 1/3   -> pick 1
    # r=5, k=2 (0,3,4,100,101): 0:9+16=25, 3:1+9=10, 4:1+16=17, 100:1+96^2     -> pick 3
    # r=4, k=1 (0,4,100,101): 0:16, 4:16, 100:1, 101:1; tie 100/101            -> pick 100 (row 5)
    # r=3, k=1 (0,4,101): 0:16, 4:16, 101:97^2; tie 0/4                        -> pick 0
    # Selected values 2, 1, 3, 100, 0; median 2; the 3 nearest are 2, 1, 3: mean 2.
    x = t([[0.0], [1.0], [2.0], [3.0], [4.0], [100.0], [101.0]])
    res = bulyan_with_info(x, 1)
    assert res.selected.tolist() == [2, 1, 3, 5, 0]
    close(res.vector, [2.0])
    close(AGGREGATORS.get("bulyan")(x, 1), [2.0])


def test_bulyan_matches_flowers_rule_on_random_rows():
    """Flower's ``aggregate_bulyan`` over its ``aggregate_krum`` (transcribed from its
    definition): Krum on the rows left with ``max(1, r - f - 2)`` neighbours, ``argmin``, then the
    ``beta`` values nearest the median. At f <= 2 its picks tie on every draw (the closest
    pair, one neighbour scored), so this pins the tie rule; f = 3 has no ties."""

    def flower(x: torch.Tensor, f: int) -> torch.Tensor:
        left, chosen = list(range(x.shape[0])), []
        for _ in range(x.shape[0] - 2 * f):
            y = x[left]
            d = ((y[:, None] - y[None]) ** 2).sum(-1)
            k = max(1, len(left) - f - 2)
            scores = d.sort(dim=1).values[:, 1:k + 1].sum(dim=1)
            chosen.append(left.pop(int(torch.argmin(scores))))
        s = x[chosen].sort(dim=0).values
        m = len(chosen)
        med = (s[(m - 1) // 2] + s[m // 2]) / 2
        beta = m - 2 * f
        nearest = (x[chosen] - med).abs().argsort(dim=0, stable=True)[:beta]
        return x[chosen].gather(0, nearest).mean(dim=0)

    for n, f in ((7, 1), (9, 1), (11, 2), (15, 3)):
        for seed in range(20):
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(n, 5, generator=g, dtype=torch.float64)
            close(AGGREGATORS.get("bulyan")(x, f), flower(x, f).tolist())


def test_median_exact_even_n_is_mean_of_middle_values(select_path):
    # Column 0: 1, 2, 10, 3 -> sorted 1, 2, 3, 10 -> (2 + 3) / 2 = 2.5 (torch.median says 2).
    # Column 1: 5, 5, 5, -1 -> sorted -1, 5, 5, 5 -> (5 + 5) / 2 = 5 (repeated middle value).
    # Column 2: 4, 4, 0, 0 -> (0 + 4) / 2 = 2.
    x = t([[1.0, 5.0, 4.0], [2.0, 5.0, 4.0], [10.0, 5.0, 0.0], [3.0, -1.0, 0.0]])
    close(AGGREGATORS.get("median")(x, 1), [2.5, 5.0, 2.0])
    assert x.median(dim=0).values[0] == 2.0  # why torch.median is not used unaltered
    # Odd n: 3, 1, 2 -> 2.
    close(AGGREGATORS.get("cwmed")(t([[3.0], [1.0], [2.0]]), 1), [2.0])


def test_trimmed_mean_exact(select_path):
    # n=5, f=1: column 0: 1 2 3 4 100 -> drop 1 and 100 -> (2+3+4)/3 = 3;
    # column 1: -50 0 1 2 3 -> drop -50 and 3 -> (0+1+2)/3 = 1.
    x = t([[100.0, 0.0], [2.0, -50.0], [3.0, 1.0], [1.0, 2.0], [4.0, 3.0]])
    close(AGGREGATORS.get("trimmed_mean")(x, 1), [3.0, 1.0])
    # b=2 keeps only the middle value: 3 and 1.
    close(AGGREGATORS.get("cwtm")(x, 1, b=2), [3.0, 1.0])


def test_meamed_and_phocas_exact(select_path):
    # One column 20, 0, 9, 21, 8 (sorted 0 8 9 20 21), n=5, f=1: average the 4 values nearest
    # to a centre, i.e. drop either 0 or 21.
    # MeaMed: centre = median 9; distances 9, 1, 0, 11, 12 -> drop 21 -> (0+8+9+20)/4 = 9.25.
    # Phocas: centre = trimmed mean (8+9+20)/3 = 12.33; distances 12.33, 4.33, 3.33, 7.67, 8.67
    #         -> drop 0 -> (8+9+20+21)/4 = 14.5.
    x = t([[20.0], [0.0], [9.0], [21.0], [8.0]])
    close(AGGREGATORS.get("meamed")(x, 1), [9.25])
    close(AGGREGATORS.get("phocas")(x, 1), [14.5])


def test_geometric_median_exact(select_path):
    # The geometric median of an equilateral triangle is its centroid (its Fermat point).
    s3 = math.sqrt(3.0)
    x = t([[0.0, 0.0], [2.0, 0.0], [1.0, s3]])
    close(AGGREGATORS.get("geomed")(x, 1, tol=0.0, max_iter=500), [1.0, s3 / 3], atol=1e-9)
    # Collinear 0, 1, 10: the geometric median is the median, 1 (the start; it stays there).
    close(AGGREGATORS.get("rfa")(t([[0.0], [1.0], [10.0]]), 1), [1.0])
    # Weights 3 and 1 on 0 and 10: the heavier point is the minimiser (3|v| + |v - 10|).
    res = AGGREGATORS.get("geometric_median")(
        t([[0.0], [10.0]]), 0, weights=torch.tensor([3.0, 1.0]), tol=0.0, max_iter=200
    )
    close(res, [0.0], atol=1e-5)


def test_geometric_median_default_start_on_a_row(select_path):
    # Rows (0, 0), (1, 0), (2, 0), (0, 1), (0, -1): the coordinate median, the default start, is
    # row 0, but the unit vectors from it to the other rows sum to (2, 0), longer than row 0's
    # own weight (1, both times 1/5), so the minimiser is off it, on the x-axis where
    # v + (1 - v) + (2 - v) + 2 sqrt(1 + v^2) is flat: 2v / sqrt(1 + v^2) = 1, v = 1/sqrt(3).
    # The smoothed step from a row weighs it by 1/nu and barely moves; the default tolerance
    # then stopped on the row, (0, 0).
    x = t([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    gm = AGGREGATORS.get("geometric_median")
    expected = [1 / math.sqrt(3.0), 0.0]
    close(gm(x, 1), expected, atol=1e-2)  # the default tol leaves about sqrt(tol) of error
    close(gm(x, 1, tol=1e-15), expected, atol=1e-6)
    close(gm(x.float(), 1), torch.tensor(expected).float(), atol=1e-2)
    # Two rows on the start, whose weight outweighs the others' pull (|(1, 1) - (1, 1)/sqrt 2| /
    # 5 < 2/5): the start is the geometric median and stays.
    y = t([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    close(gm(y, 1), [0.0, 0.0])


def test_geometric_median_named_starts(select_path):
    # Rows (1, 0), (0, 2), (3, 0); one Weiszfeld step from the origin weighs each row by
    # 1 / |x_i| = 1, 1/2, 1/3: v = ((1, 0) + (0, 1) + (1, 0)) / (11/6) = (12/11, 6/11).
    x = t([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    gm = AGGREGATORS.get("geometric_median")
    close(gm(x, 1, init="zeros", max_iter=1, tol=0.0), [12 / 11, 6 / 11])
    close(gm(x, 1, init="zeros", max_iter=0), [0.0, 0.0])
    close(gm(x, 1, init="mean", max_iter=0), [4 / 3, 2 / 3])
    close(gm(x, 1, init="median", max_iter=0), [1.0, 0.0])
    with pytest.raises(ValueError, match="median, mean, zeros"):
        gm(x, 1, init="origin")


def test_centered_clip_exact(select_path):
    # Rows 0, 2, 10 (first coordinate), v0 = 0, tau = 1:
    # step 1: differences 0, 2, 10 -> clipped 0, 1, 1 -> v1 = 0 + 2/3 = 2/3;
    # step 2: differences -2/3, 4/3, 28/3 -> clipped -2/3, 1, 1 -> v2 = 2/3 + (4/3)/3 = 10/9.
    x = t([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0]])
    cclip = AGGREGATORS.get("cclip")
    close(cclip(x, 1, tau=1.0, iterations=1, init=torch.zeros(2)), [2 / 3, 0.0])
    close(cclip(x, 1, tau=1.0, iterations=2, init=torch.zeros(2)), [10 / 9, 0.0])
    # tau = inf: one step from anywhere is the plain mean; zero steps return the start.
    close(cclip(x, 1, tau=math.inf, iterations=1, init=torch.tensor([5.0, 5.0])), [4.0, 0.0])
    close(cclip(x, 1, iterations=0), [2.0, 0.0])  # the coordinate median


def test_sign_majority_exact():
    # Column sums of signs: 1+1-1 = 1, -1-1+1 = -1, 0, 1-1+0 = 0.
    x = t([[1.0, -2.0, 0.0, 3.0], [2.0, -1.0, 0.0, -3.0], [-5.0, 4.0, 0.0, 0.0]])
    close(AGGREGATORS.get("signsgd")(x, 1), [1.0, -1.0, 0.0, 0.0])


def test_mda_exact():
    # n=4, f=1, 1-D rows 0, 1, 3, 10: diameters of the 3-subsets {0,1,3}: 3, {0,1,10}: 10,
    # {0,3,10}: 10, {1,3,10}: 9 -> keep {0,1,3}: mean 4/3.
    res = aggregate("mda", t([[0.0], [1.0], [3.0], [10.0]]), 1)
    close(res.vector, [4 / 3])
    assert res.selected.tolist() == [0, 1, 2]


# --------------------------------------------------------------------------- loop references
@pytest.mark.parametrize("case", RULES, ids=RULE_IDS)
def test_agrees_with_loop_reference(case):
    for seed, (n, f) in enumerate(case.configs):
        for d in (1, 7):
            x = honest_rows(n, d, seed=100 * seed + d)
            expected = case.reference(rows_of(x), f, **case.params)
            actual = case.fn(x, f, **case.params)
            torch.testing.assert_close(actual, t(expected), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["multikrum", "trimmed_mean", "phocas"])
def test_agrees_with_loop_reference_with_params(name, select_path):
    case = RULES[RULE_IDS.index(name)]
    x = honest_rows(11, 5, seed=7)
    params = {"m": 3} if name == "multikrum" else {"b": 4}
    torch.testing.assert_close(case.fn(x, 2, **params), t(case.reference(rows_of(x), 2, **params)))


def test_reference_even_median_matches_float32_path(select_path):
    x = honest_rows(10, 1000, seed=3, dtype=torch.float32)
    expected = x.double().sort(dim=0).values[4:6].mean(dim=0).float()
    torch.testing.assert_close(coordinate_median(x), expected)


def test_pairwise_distances_handle_overflow():
    x = torch.randn(6, 4)
    x[0] = 1e30
    x[1] = -1e30
    d2 = pairwise_sq_distances(x)
    assert not torch.isnan(d2).any() and (d2.diagonal() == 0).all()
    assert torch.isinf(d2[0, 1:]).all() and torch.isinf(d2[1, 2:]).all()
    torch.testing.assert_close(d2[2:, 2:], torch.cdist(x[2:], x[2:]) ** 2, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- errors, registry
@pytest.mark.parametrize("case", RULES, ids=RULE_IDS)
def test_bad_f_raises_naming_n_and_f(case):
    for f in (1, 2, 3):
        n = case.min_n(f) - 1
        with pytest.raises(ValueError, match=rf"n={n}, f={f}"):
            case.fn(honest_rows(n, 3, seed=f), f, **case.params)
        case.fn(honest_rows(n + 1, 3, seed=f), f, **case.params)  # the bound itself is fine
    with pytest.raises(ValueError, match="f >= 0"):
        case.fn(honest_rows(5, 3, seed=0), -1, **case.params)


def test_bound_messages_are_exact():
    with pytest.raises(ValueError, match=r"^Bulyan needs n >= 4f \+ 3, got n=10, f=2$"):
        AGGREGATORS.get("bulyan")(honest_rows(10, 3, seed=0), 2)
    with pytest.raises(ValueError, match=r"^Krum needs n >= 2f \+ 3, got n=6, f=2$"):
        AGGREGATORS.get("krum")(honest_rows(6, 3, seed=0), 2)


def test_bound_checked_on_callers_n_and_f_even_when_nan_rows_are_dropped():
    # n=6, f=2 is invalid for Krum; dropping 2 NaN rows would leave n=4, f=0 (valid), but the
    # configuration must fail on every round, not only on rounds without NaN rows.
    x = honest_rows(6, 3, seed=0)
    x[:2] = float("nan")
    with pytest.raises(ValueError, match="n=6, f=2"):
        AGGREGATORS.get("krum")(x, 2)


def test_too_many_nonfinite_rows_raise():
    x = honest_rows(9, 3, seed=0)
    x[:3] = float("nan")
    with pytest.raises(ValueError, match="3 of 9 rows contain NaN/Inf but only f=2"):
        AGGREGATORS.get("median")(x, 2)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("multikrum", {"m": 0}, "1 <= m <= n - f"),
        ("multikrum", {"m": 8}, "1 <= m <= n - f"),
        ("trimmed_mean", {"b": 1}, "b >= f"),
        ("trimmed_mean", {"b": 5}, "n > 2b"),
        ("phocas", {"b": 5}, "n > 2b"),
        ("geometric_median", {"nu": 0.0}, "nu > 0"),
        ("geometric_median", {"weights": torch.ones(3)}, "weights"),
        ("centered_clip", {"tau": -1.0}, "tau > 0"),
        ("centered_clip", {"init": torch.zeros(2)}, "init must have shape"),
        ("centered_clip", {"init": torch.full((3,), float("nan"))}, "init must be finite"),
        ("geometric_median", {"init": torch.full((3,), float("inf"))}, "init must be finite"),
        ("mda", {"max_subsets": 10}, "max_subsets=10"),
    ],
)
def test_bad_params_raise(name, params, message):
    with pytest.raises(ValueError, match=message):
        AGGREGATORS.get(name)(honest_rows(9, 3, seed=0), 2, **params)


@pytest.mark.parametrize("case", RULES, ids=RULE_IDS)
def test_registry_names_aliases_and_bound_meta(case):
    for alias in case.aliases:
        assert AGGREGATORS.canonical(alias) == case.name
    entry = AGGREGATORS.entry(case.name)
    assert entry.meta["min_n"](2) == case.min_n(2)
    assert ("info" in entry.meta) == case.info
    assert entry.obj.__doc__ and "Args:" in entry.obj.__doc__
    assert ".. math::" in sys.modules[entry.obj.__module__].__doc__


@pytest.mark.parametrize("name", ["krum", "multikrum", "bulyan", "mda"])
def test_info_matches_vector_and_maps_indices_past_dropped_rows(name):
    x = honest_rows(11, 4, seed=5)
    x[3] = float("nan")
    x[7] = float("inf")
    res = aggregate(name, x, 2)
    torch.testing.assert_close(res.vector, AGGREGATORS.get(name)(x, 2))
    chosen = res.selected.tolist()
    assert 3 not in chosen and 7 not in chosen and len(set(chosen)) == len(chosen)
    # Two rows dropped: n = 9, f = 0 remain, so Multi-Krum/Bulyan/MDA keep all 9 and Krum one.
    assert len(chosen) == (1 if name == "krum" else 9)
    if name in ("krum", "multikrum", "mda"):  # the vector is the mean of the selected rows
        torch.testing.assert_close(res.vector, x[res.selected].mean(dim=0))
    if res.scores is not None:
        assert res.scores.shape == (11,)
        assert math.isinf(res.scores[3]) and math.isinf(res.scores[7])


def test_finite_rows_whose_sum_overflows_are_kept():
    # A row of 3e38 float32 entries sums to inf but is finite: it is a (far) row, not a dropped
    # one, so f is not spent on it and n is unchanged.
    x = honest_rows(5, 4, seed=0, dtype=torch.float32)
    x[0] = 3e38
    kept, f_left, index = drop_nonfinite(x, 0)
    assert index is None and f_left == 0 and kept.shape == (5, 4)
    x[1, 2] = float("nan")
    kept, f_left, index = drop_nonfinite(x, 1)
    assert index.tolist() == [0, 2, 3, 4] and f_left == 0


def test_row_norms_no_overflow_or_underflow_in_float32():
    x = torch.tensor([[1e30, 1e30], [1e-30, 1e-30], [3.0, 4.0], [0.0, 0.0]])
    expected = torch.tensor([math.sqrt(2) * 1e30, math.sqrt(2) * 1e-30, 5.0, 0.0], dtype=T)
    torch.testing.assert_close(row_norms(x), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("case", RULES, ids=RULE_IDS)
def test_column_blocks_give_the_same_result(case, monkeypatch):
    # Coordinate-wise work runs over blocks of columns on the CPU; force blocks of 3 columns.
    n, f = case.configs[0]
    x = honest_rows(n + 1, 37, seed=11)  # n + 1 rows: the even-n median path too
    whole = case.fn(x, f, **case.params)
    monkeypatch.setattr(_kernels, "COLUMN_BLOCK_BYTES", 3 * (n + 1) * 8)
    blocked = case.fn(x, f, **case.params)
    torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(blocked, t(case.reference(rows_of(x), f, **case.params)))
