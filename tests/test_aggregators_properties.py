"""Generic properties of every robust aggregator, driven by the table in test_aggregators_db.py.

Permutation invariance, translation / scaling behaviour, outliers (huge, NaN, Inf rows), dtype and
device, no in-place modification. Hypothesis draws permutations, offsets, scales and which kind
of garbage the Byzantine rows carry; the honest rows come from seeded generators so that no
example depends on ties.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_aggregators_db import DEVICES, RULE_IDS, RULES, honest_rows

from shieldwall.aggregators import AGGREGATORS, aggregate

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)
GARBAGE = [1e30, -1e30, float("nan"), float("inf"), float("-inf"), 1e15]


def _run(case, x, f, **extra):
    return case.fn(x, f, **{**case.params, **extra})


@pytest.mark.parametrize("case", RULES, ids=RULE_IDS)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_permutation_invariance(case, data, seed):
    n, f = data.draw(st.sampled_from([c for c in case.configs if c not in case.order_ties]))
    x = honest_rows(n, 6, seed)
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    torch.testing.assert_close(_run(case, x[perm], f), _run(case, x, f), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", [c for c in RULES if c.translation], ids=repr)
@SETTINGS
@given(seed=st.integers(0, 2**16), shift=st.lists(st.floats(-50, 50), min_size=6, max_size=6))
def test_translation_equivariance(case, seed, shift):
    n, f = case.configs[0]
    x = honest_rows(n, 6, seed)
    t = torch.tensor(shift, dtype=x.dtype)
    torch.testing.assert_close(_run(case, x + t, f), _run(case, x, f) + t, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("case", [c for c in RULES if c.scaling], ids=repr)
@SETTINGS
@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 100.0))
def test_positive_scaling(case, seed, scale):
    n, f = case.configs[0]
    x = honest_rows(n, 6, seed)
    out, scaled = _run(case, x, f), _run(case, x * scale, f)
    expected = out * scale if case.scaling == "equivariant" else out
    torch.testing.assert_close(scaled, expected, rtol=1e-7, atol=1e-7 * scale)


def _check_promise(case, out, honest, n, f):
    """``box``: inside the honest rows' bounding box. ``ball``: within
    ``2(n-f)/(n-2f) * r`` of the honest mean, r the honest rows' largest distance to it (the
    geometric median's breakdown bound), plus ``iterations * tau * f / n`` for CenteredClip
    (what the Byzantine rows can move its centre)."""
    tol = 1e-4 * (1 + float(honest.abs().max()))
    assert torch.isfinite(out).all(), f"{case.name}: non-finite output {out}"
    if case.outliers == "box":
        lo, hi = honest.min(dim=0).values, honest.max(dim=0).values
        inside = (out >= lo - tol) & (out <= hi + tol)
        assert bool(inside.all()), f"{case.name}: {out} outside the honest box [{lo}, {hi}]"
    elif case.outliers == "ball":
        centre = honest.mean(dim=0)
        radius = 2 * (n - f) / (n - 2 * f) * float((honest - centre).norm(dim=1).max())
        if case.name == "centered_clip":
            radius += case.params["iterations"] * case.params["tau"] * f / n
        assert float((out - centre).norm()) <= radius + tol, case.name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", RULES, ids=RULE_IDS)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_f_far_or_nonfinite_rows(case, dtype, data, seed):
    n, f = data.draw(st.sampled_from([c for c in case.configs if c[1] > 0]))
    honest = honest_rows(n - f, 5, seed, dtype=dtype)
    byz = torch.empty(f, 5, dtype=dtype)
    for i in range(f):  # whole rows of one garbage value, or one garbage entry in a honest row
        value = data.draw(st.sampled_from(GARBAGE))
        if data.draw(st.booleans()):
            byz[i] = value
        else:
            byz[i] = honest[i % (n - f)]
            byz[i, data.draw(st.integers(0, 4))] = value
    x = torch.cat([byz, honest])[torch.tensor(data.draw(st.permutations(range(n))))]
    out = _run(case, x, f)
    assert out.dtype == dtype and out.shape == (5,)
    _check_promise(case, out.double(), honest.double(), n, f)


@pytest.mark.parametrize("case", [c for c in RULES if c.box_any], ids=repr)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_f_arbitrary_finite_rows_stay_in_honest_box(case, data, seed):
    n, f = case.configs[0]
    honest = honest_rows(n - f, 4, seed)
    values = st.floats(-1e6, 1e6, allow_nan=False)
    byz = torch.tensor(
        data.draw(st.lists(st.lists(values, min_size=4, max_size=4), min_size=f, max_size=f)),
        dtype=honest.dtype,
    )
    out = _run(case, torch.cat([byz, honest]), f)
    lo, hi = honest.min(dim=0).values, honest.max(dim=0).values
    assert bool(((out >= lo - 1e-9) & (out <= hi + 1e-9)).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", RULES, ids=RULE_IDS)
def test_dtype_device_kept_and_input_untouched(case, dtype, device):
    n, f = case.configs[0]
    x = honest_rows(n, 6, seed=1, dtype=dtype, device=device)
    x[0, 0] = float("nan")  # exercise the non-finite path too
    before = x.clone()
    out = _run(case, x, f)
    assert out.dtype == dtype and out.device == x.device and out.shape == (6,)
    assert torch.equal(torch.isnan(x), torch.isnan(before))
    torch.testing.assert_close(x, before, equal_nan=True, rtol=0, atol=0)
    assert out.data_ptr() not in {x[i].data_ptr() for i in range(n)}  # never a view of a row
    res = aggregate(case.name, x, f, **case.params)
    torch.testing.assert_close(res.vector, out)
    if device != "cpu":  # same numbers as on the CPU
        torch.testing.assert_close(out.cpu(), _run(case, x.cpu(), f), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", RULES, ids=RULE_IDS)
def test_low_precision_dtypes_kept(case):
    n, f = case.configs[0]
    for dtype in (torch.float16, torch.bfloat16):
        out = _run(case, honest_rows(n, 6, seed=2, dtype=dtype), f)
        assert out.dtype == dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("case", RULES, ids=RULE_IDS)
def test_float32_agrees_with_float64(case):
    n, f = case.configs[0]
    x = honest_rows(n, 50, seed=4)
    torch.testing.assert_close(
        _run(case, x.float(), f).double(), _run(case, x, f), rtol=1e-4, atol=1e-4
    )


def test_every_registered_robust_rule_is_in_the_table():
    mine = {
        "krum",
        "multikrum",
        "bulyan",
        "median",
        "trimmed_mean",
        "meamed",
        "phocas",
        "geometric_median",
        "centered_clip",
        "sign_majority",
        "mda",
    }
    assert mine <= set(AGGREGATORS.names())
    assert mine == {case.name for case in RULES}
