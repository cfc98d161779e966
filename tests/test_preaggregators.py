"""Pre-aggregators (bucketing, NNM, clipping, ARC) and their chaining before an aggregator."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_aggregators_db import DEVICES, honest_rows, rows_of

from shieldwall.aggregators import AGGREGATORS
from shieldwall.preaggregators import PREAGGREGATORS, preaggregate_chain
from shieldwall.preaggregators.arc import arc_num_clipped

T = torch.float64
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=T)


# --------------------------------------------------------------------------- loop references
def ref_nnm(rows, f):
    n = len(rows)
    out = []
    for i in range(n):

        def key(j, i=i):  # itself first, then by squared distance, ties to the lower index
            return (-1.0 if j == i else sum((a - b) ** 2 for a, b in zip(rows[i], rows[j])), j)

        order = sorted(range(n), key=key)[: n - f]
        out.append([sum(rows[j][k] for j in order) / (n - f) for k in range(len(rows[0]))])
    return out


def _norm(row):
    return math.sqrt(sum(v * v for v in row))


def ref_clipping(rows, f, c=1.0):
    return [[v * min(1.0, c / _norm(r)) if _norm(r) > 0 else v for v in r] for r in rows]


def ref_arc(rows, f):
    n = len(rows)
    k = math.floor(2 * (f / n) * (n - f) + 1e-12)
    if k == 0:
        return [list(r) for r in rows]
    by_norm = sorted(range(n), key=lambda i: -_norm(rows[i]))
    threshold = _norm(rows[by_norm[k]])
    clipped = set(by_norm[:k])
    return [
        [v * threshold / _norm(r) for v in r] if i in clipped and _norm(r) > threshold else list(r)
        for i, r in enumerate(rows)
    ]


REFERENCES = {"nnm": ref_nnm, "clipping": ref_clipping, "arc": ref_arc}


# --------------------------------------------------------------------------- hand-computed cases
X3 = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]


def test_nnm_exact():
    # n=3, f=1: each row becomes the mean of itself and its nearest other row. Row 1 is at equal
    # distance (27) from rows 0 and 2: the tie goes to the lower index, row 0.
    out = PREAGGREGATORS.get("nnm")(t(X3), 1)
    torch.testing.assert_close(out, t([[2.5, 3.5, 4.5], [2.5, 3.5, 4.5], [5.5, 6.5, 7.5]]))


def test_arc_exact():
    # n=3, f=1: k = floor(2 * 1/3 * 2) = floor(1.33) = 1 row clipped, the largest ([7,8,9],
    # norm sqrt(194)), to the next norm, ||[4,5,6]|| = sqrt(77): [7,8,9] * sqrt(77/194).
    out = PREAGGREGATORS.get("arc")(t(X3), 1)
    scale = math.sqrt(77 / 194)
    torch.testing.assert_close(out, t([X3[0], X3[1], [7 * scale, 8 * scale, 9 * scale]]))
    torch.testing.assert_close(out[2], t([4.41004009, 5.04004582, 5.67005155]), atol=1e-8, rtol=0)


@pytest.mark.parametrize(
    "n, f, k", [(3, 1, 1), (10, 3, 4), (10, 0, 0), (9, 4, 4), (16, 3, 4), (64, 15, 22), (7, 1, 1)]
)
def test_arc_number_clipped(n, f, k):
    # floor(2 f (n - f) / n): 10,3 -> 4.2 -> 4; 9,4 -> 4.44 -> 4; 64,15 -> 22.97 -> 22.
    assert arc_num_clipped(n, f) == k


def test_clipping_exact():
    # c=2: every row scaled to norm 2, e.g. [1,2,3] * 2/sqrt(14); [0.6, 0.8] (norm 1) untouched.
    out = PREAGGREGATORS.get("clipping")(t(X3), 1, c=2.0)
    torch.testing.assert_close(out[0], t([1.0, 2.0, 3.0]) * 2 / math.sqrt(14))
    torch.testing.assert_close(out.norm(dim=1), t([2.0, 2.0, 2.0]))
    small = t([[0.6, 0.8], [0.0, 0.0]])
    torch.testing.assert_close(PREAGGREGATORS.get("static_clipping")(small, 0, c=2.0), small)


def test_bucketing_exact():
    x = t(X3 + [[10.0, 11.0, 12.0]])
    # s >= n: one bucket, the mean; s = 1: the rows, shuffled.
    torch.testing.assert_close(PREAGGREGATORS.get("bucketing")(x, 1, s=4), x.mean(0, keepdim=True))
    shuffled = PREAGGREGATORS.get("bucketing")(x, 1, s=1)
    assert sorted(shuffled.tolist()) == sorted(x.tolist())
    # s = 2 with a seeded generator: bucket b holds perm[2b], perm[2b+1] of the same draw.
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(5)).tolist()
    out = PREAGGREGATORS.get("bucketing")(x, 1, s=2, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, torch.stack([x[perm[0:2]].mean(0), x[perm[2:4]].mean(0)]))


def test_bucketing_uneven_last_bucket_and_f_after():
    x = honest_rows(7, 3, seed=0)
    g = torch.Generator().manual_seed(1)
    out = PREAGGREGATORS.get("bucketing")(x, 2, s=3, generator=g)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    expected = [x[perm[0:3]].mean(0), x[perm[3:6]].mean(0), x[perm[6:7]].mean(0)]
    torch.testing.assert_close(out, torch.stack(expected))
    f_after = PREAGGREGATORS.entry("bucketing").meta["f_after"]
    assert f_after(7, 2, s=3) == 2  # at most f buckets hold a Byzantine row
    assert f_after(10, 7, s=4) == 3  # but never more than ceil(n / s) buckets
    assert f_after(10, 3) == 3  # default s = 2


# --------------------------------------------------------------------------- generic properties
@pytest.mark.parametrize("name, params", [("nnm", {}), ("clipping", {"c": 5.0}), ("arc", {})])
def test_agrees_with_loop_reference(name, params):
    for seed, (n, f) in enumerate([(9, 2), (10, 3), (5, 2), (4, 0)]):
        x = honest_rows(n, 6, seed=seed)
        expected = REFERENCES[name](rows_of(x), f, **params)
        torch.testing.assert_close(PREAGGREGATORS.get(name)(x, f, **params), t(expected))


@pytest.mark.parametrize("name, params", [("nnm", {}), ("clipping", {"c": 5.0}), ("arc", {})])
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_permutation_equivariance(name, params, data, seed):
    x = honest_rows(9, 5, seed)
    perm = torch.tensor(data.draw(st.permutations(range(9))))
    fn = PREAGGREGATORS.get(name)
    torch.testing.assert_close(fn(x[perm], 2, **params), fn(x, 2, **params)[perm])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "name, params", [("nnm", {}), ("clipping", {}), ("arc", {}), ("bucketing", {"s": 2})]
)
def test_dtype_device_kept_and_input_untouched(name, params, dtype, device):
    x = honest_rows(9, 4, seed=3, dtype=dtype, device=device)
    before = x.clone()
    out = PREAGGREGATORS.get(name)(x, 2, **params)
    assert out.dtype == dtype and out.device == x.device
    assert out.shape == ((5, 4) if name == "bucketing" else (9, 4))
    assert torch.equal(x, before)
    if name != "bucketing":
        assert out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize(
    "name, params", [("nnm", {}), ("clipping", {}), ("arc", {}), ("bucketing", {"s": 2})]
)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_nonfinite_rows_stay_out_of_honest_rows(name, params, data, seed):
    n, f = 11, 3
    bad = data.draw(
        st.lists(
            st.sampled_from([float("nan"), float("inf"), float("-inf")]), min_size=1, max_size=f
        )
    )
    x = honest_rows(n, 4, seed)
    where = data.draw(st.permutations(range(n)))[: len(bad)]
    for i, value in zip(where, bad):
        x[i, data.draw(st.integers(0, 3))] = value
    out = PREAGGREGATORS.get(name)(x, f, **params)
    nonfinite_out = int((~torch.isfinite(out).all(dim=1)).sum())
    assert nonfinite_out <= len(bad)  # one Byzantine row in, at most one out
    if name != "bucketing":  # row-wise steps: exactly the bad rows stay bad, the others finite
        assert set((~torch.isfinite(out).all(dim=1)).nonzero().flatten().tolist()) == set(where)
    if name == "nnm":  # a finite row never mixes in a non-finite one
        finite = torch.isfinite(x).all(dim=1)
        ref = t(ref_nnm(rows_of(x[finite]), f - len(bad)))
        torch.testing.assert_close(out[finite], ref)


@pytest.mark.parametrize("name", ["nnm", "clipping", "arc", "bucketing"])
def test_too_many_nonfinite_rows_raise(name):
    x = honest_rows(9, 3, seed=0)
    x[:3] = float("nan")
    with pytest.raises(ValueError, match="3 of 9 rows contain NaN/Inf but only f=2"):
        PREAGGREGATORS.get(name)(x, 2)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("nnm", {}, r"NNM needs n >= 2f \+ 1, got n=6, f=3"),
        ("arc", {}, r"ARC needs n >= 2f \+ 1, got n=6, f=3"),
        ("clipping", {"c": 0.0}, "c > 0"),
        ("bucketing", {"s": 0}, "s >= 1"),
    ],
)
def test_bad_params_raise(name, params, message):
    with pytest.raises(ValueError, match=message):
        PREAGGREGATORS.get(name)(honest_rows(6, 3, seed=0), 3, **params)


def test_arc_clips_huge_float32_rows_to_the_honest_scale():
    x = honest_rows(10, 4, seed=0, dtype=torch.float32)
    x[0] = 1e30  # the float32 norm would overflow; it is accumulated in float64
    out = PREAGGREGATORS.get("arc")(x, 2)
    assert torch.isfinite(out).all() and out[0].norm() <= x[1:].norm(dim=1).max() * (1 + 1e-6)
    assert (out[0] > 0).all()  # direction kept, not zeroed


def test_registry_aliases():
    assert PREAGGREGATORS.canonical("static_clipping") == "clipping"
    assert PREAGGREGATORS.canonical("ARC") == "arc"
    assert PREAGGREGATORS.canonical("nearest-neighbor-mixing") == "nnm"


# --------------------------------------------------------------------------- chaining
def test_chain_then_aggregator_with_outliers():
    n, f = 21, 3
    honest = honest_rows(n - f, 5, seed=9)
    x = torch.cat(
        [
            torch.full((1, 5), 1e30, dtype=T),
            torch.full((1, 5), float("nan"), dtype=T),
            torch.full((1, 5), -1e30, dtype=T),
            honest,
        ]
    )
    steps = [("nnm", {}), ("arc", {}), ("bucketing", {"s": 2, "generator": torch.Generator()})]
    rows, f_left = preaggregate_chain(x, f, steps)
    assert rows.shape == (11, 5) and f_left == f
    assert int((~torch.isfinite(rows).all(dim=1)).sum()) <= 1  # the NaN row's bucket
    for rule in ("krum", "median", "trimmed_mean", "geometric_median", "centered_clip"):
        out = AGGREGATORS.get(rule)(rows, f_left)
        assert torch.isfinite(out).all(), rule
        lo, hi = honest.min(0).values, honest.max(0).values
        width = hi - lo
        assert bool(((out >= lo - width) & (out <= hi + width)).all()), rule


def test_chain_bucketing_then_bound_applies_to_buckets():
    x = honest_rows(10, 3, seed=0)
    rows, f_left = preaggregate_chain(x, 2, [("bucketing", {"s": 2})])
    assert rows.shape[0] == 5 and f_left == 2
    with pytest.raises(ValueError, match="n=5, f=2"):
        AGGREGATORS.get("krum")(rows, f_left)  # Krum needs 2f + 3 = 7 buckets
    AGGREGATORS.get("median")(rows, f_left)  # 5 >= 2f + 1
