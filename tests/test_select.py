"""The numba fast path of the coordinate-wise rules (aggregators._select) against the torch path.

The generic and reference tests of every rule run on both paths already (test_aggregators_db's
``@torch`` rows and the ``select_path`` fixture); these check what they cannot see: the sorting
networks sort exactly, results match the torch path on inputs full of ties, for even and odd n,
over many scratch blocks and threads, and what must fall back to torch does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shieldwall.aggregators import AGGREGATORS, _select

needs_numba = pytest.mark.skipif(not _select.available(), reason="numba not installed")

RULES = [
    ("median", {}),
    ("trimmed_mean", {}),
    ("trimmed_mean", {"b": 4}),
    ("meamed", {}),
    ("phocas", {}),
    ("phocas", {"b": 4}),
    ("bulyan", {}),
    ("geometric_median", {"max_iter": 3, "tol": 0.0}),
    ("centered_clip", {"tau": 1.0, "iterations": 2}),
]


def _on_torch(name, x, f, **params):
    with _select.torch_fallback():
        return AGGREGATORS.get(name)(x, f, **params)


@pytest.mark.parametrize("n", list(range(1, 41)) + [63, 64, 65, 100, 256])
def test_network_sorts_every_column_exactly(n):
    pairs = _select.network_pairs(n)
    assert pairs.shape[1] == 2 and bool((pairs[:, 0] < pairs[:, 1]).all())
    assert bool((pairs < n).all())
    rng = np.random.default_rng(n)
    # Random values, few distinct values (ties), and all 0/1 patterns for small n.
    cols = [rng.standard_normal((n, 50)), rng.integers(0, 3, (n, 50)).astype(float)]
    if n <= 12:
        cols.append(((np.arange(2**n)[None, :] >> np.arange(n)[:, None]) & 1).astype(float))
    for values in cols:
        out = values.copy()
        for i, j in pairs:
            lo, hi = np.minimum(out[i], out[j]), np.maximum(out[i], out[j])
            out[i], out[j] = lo, hi
        np.testing.assert_array_equal(out, np.sort(values, axis=0))
        # Pruned to the median's positions: those still come out right.
        middle = tuple(sorted({(n - 1) // 2, n // 2}))
        out = values.copy()
        for i, j in _select.network_pairs(n, middle):
            lo, hi = np.minimum(out[i], out[j]), np.maximum(out[i], out[j])
            out[i], out[j] = lo, hi
        np.testing.assert_array_equal(out[list(middle)], np.sort(values, axis=0)[list(middle)])


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n", [11, 12, 19])
@pytest.mark.parametrize("name,params", RULES, ids=lambda v: str(v) if v else "")
def test_fast_path_matches_torch_path(name, params, n, dtype, monkeypatch):
    f = (n - 3) // 4
    g = torch.Generator().manual_seed(n)
    # Columns of few distinct values (ties everywhere, even-n medians of equal and unequal
    # middle values), beside plain random ones; odd width, several scratch blocks and threads.
    ties = torch.randint(-2, 3, (n, 700), generator=g).to(dtype) * 0.5
    x = torch.cat([ties, torch.randn(n, 333, generator=g, dtype=dtype)], dim=1)
    monkeypatch.setattr(_select, "MIN_COLUMNS_PER_THREAD", 100)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        fast = AGGREGATORS.get(name)(x, f, **params)
    finally:
        torch.set_num_threads(threads)
    slow = _on_torch(name, x, f, **params)
    assert fast.dtype == dtype and fast.shape == (x.shape[1],)
    if name == "median":  # a selection: bit for bit
        assert torch.equal(fast, slow)
    else:  # sums accumulated in float64 here, in the input's dtype there
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(fast, slow, rtol=8 * eps, atol=8 * eps)


@needs_numba
def test_fast_path_only_for_cpu_float32_float64_without_grad():
    x = torch.randn(9, 20, dtype=torch.float64)
    assert _select.columns_reduce(x, _select.MEDIAN) is not None
    for other in (x.half(), x.bfloat16(), x.clone().requires_grad_(True)):
        assert _select.columns_reduce(other, _select.MEDIAN) is None
        out = AGGREGATORS.get("median")(other, 2)
        assert out.dtype == other.dtype
    with _select.torch_fallback():
        assert _select.columns_reduce(x, _select.MEDIAN) is None
    # Non-contiguous input: same values as its contiguous copy.
    wide = torch.randn(40, 9, dtype=torch.float64)
    torch.testing.assert_close(
        _select.columns_reduce(wide.T, _select.MEDIAN),
        _select.columns_reduce(wide.T.contiguous(), _select.MEDIAN),
    )
    assert _select.columns_reduce(torch.empty(5, 0), _select.MEDIAN).shape == (0,)


def test_env_var_turns_the_fast_path_off(tmp_path):
    import os
    import subprocess
    import sys

    code = (
        "from shieldwall.aggregators import _select; import torch;"
        "print(_select.columns_reduce(torch.randn(5, 4), _select.MEDIAN) is None)"
    )
    env = {**os.environ, "SHIELDWALL_NO_NUMBA": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
