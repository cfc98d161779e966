"""Client partitions: IID and Dirichlet splits, reproducibility, skew, errors, histograms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.data.partition import (
    canonical_method,
    class_histogram,
    format_histogram,
    partition_indices,
)


def balanced_labels(num_classes: int = 10, per_class: int = 300, seed: int = 0) -> torch.Tensor:
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def assert_exact_cover(parts: list[torch.Tensor], n: int) -> None:
    assert all(p.dtype == torch.int64 and p.ndim == 1 for p in parts)
    assert sum(len(p) for p in parts) == n
    joined = torch.cat(parts)
    assert torch.equal(joined.sort().values, torch.arange(n))  # disjoint and complete


@pytest.mark.parametrize("method", ["iid", "homo", "homogeneous", "uniform", "IID"])
def test_iid_sizes_equal_and_aliases_agree(method):
    labels = balanced_labels(per_class=101)
    parts = partition_indices(labels, 7, method, seed=3)
    assert_exact_cover(parts, len(labels))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    ref = partition_indices(labels, 7, "iid", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(parts, ref))


@pytest.mark.parametrize("method", ["dirichlet", "hetero", "non-iid", "noniid", "Non_IID"])
def test_dirichlet_covers_and_respects_min_size(method):
    labels = balanced_labels()
    parts = partition_indices(labels, 20, method, alpha=0.1, seed=1, min_size=25)
    assert_exact_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= 25


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_seeded_reproducible_and_seed_sensitive(method):
    labels = balanced_labels()
    a = partition_indices(labels, 10, method, alpha=0.5, seed=7)
    b = partition_indices(labels, 10, method, alpha=0.5, seed=7)
    c = partition_indices(labels, 10, method, alpha=0.5, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, y) for x, y in zip(a, c))


def test_global_rngs_untouched():
    labels = balanced_labels()
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    partition_indices(labels, 10, "dirichlet", alpha=0.3, seed=0)
    partition_indices(labels, 10, "iid", seed=0)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def mean_max_class_fraction(labels: torch.Tensor, parts: list[torch.Tensor]) -> float:
    hist = class_histogram(labels, parts, 10).double()
    return (hist.max(dim=1).values / hist.sum(dim=1)).mean().item()


def mean_kl_to_global(labels: torch.Tensor, parts: list[torch.Tensor]) -> float:
    hist = class_histogram(labels, parts, 10).double()
    local = hist / hist.sum(dim=1, keepdim=True)
    glob = hist.sum(dim=0) / hist.sum()
    terms = torch.where(local > 0, local * (local / glob).log(), torch.zeros_like(local))
    return terms.sum(dim=1).mean().item()


def test_dirichlet_skew_grows_as_alpha_falls():
    labels = balanced_labels()
    for metric in (mean_max_class_fraction, mean_kl_to_global):
        values = {}
        for alpha in (0.1, 1.0, 10.0):
            runs = [
                metric(labels, partition_indices(labels, 10, "dirichlet", alpha=alpha, seed=s))
                for s in range(4)
            ]
            values[alpha] = sum(runs) / len(runs)
        assert values[0.1] > values[1.0] > values[10.0], (metric.__name__, values)
    iid = partition_indices(labels, 10, "iid", seed=0)
    assert mean_max_class_fraction(labels, iid) < 0.2  # ≈ 0.1 + noise


def test_single_client_gets_everything():
    labels = balanced_labels(per_class=5)
    for method in ("iid", "dirichlet"):
        (part,) = partition_indices(labels, 1, method)
        assert sorted(part.tolist()) == list(range(len(labels)))


def test_non_contiguous_labels_and_numpy_input():
    labels = np.array([3, 3, 7, 7, 7, 42, 42, 42, 42, 3] * 10)
    parts = partition_indices(labels, 4, "dirichlet", alpha=1.0, min_size=5)
    assert_exact_cover(parts, len(labels))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "shards"}, "valid methods: iid.*dirichlet"),
        ({"num_clients": 0}, "positive integer"),
        ({"num_clients": -2}, "positive integer"),
        ({"num_clients": 2.5}, "positive integer"),
        ({"num_clients": 101}, "more clients"),
        ({"method": "dirichlet", "alpha": 0.0}, "alpha"),
        ({"method": "dirichlet", "alpha": float("nan")}, "alpha"),
        ({"method": "dirichlet", "min_size": 11}, "min_size"),
        ({"method": "dirichlet", "min_size": -1}, "min_size"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(kwargs, match):
    args = {"labels": balanced_labels(per_class=10), "num_clients": 10, "method": "iid", **kwargs}
    with pytest.raises(ValueError, match=match):
        partition_indices(**args)


def test_bad_labels_rejected():
    with pytest.raises(ValueError, match="one-dimensional"):
        partition_indices(torch.zeros(4, 2, dtype=torch.long), 2, "iid")
    with pytest.raises(ValueError, match="integers"):
        partition_indices(torch.rand(10), 2, "iid")


def test_impossible_min_size_gives_up_with_value_error():
    labels = torch.tensor([0] * 95 + [1] * 5)
    with pytest.raises(ValueError, match="raise alpha"):
        partition_indices(labels, 10, "dirichlet", alpha=0.001, min_size=10, max_tries=5)


def test_canonical_method():
    assert canonical_method("Homo") == "iid" and canonical_method("NON-IID") == "dirichlet"


def test_class_histogram_and_table():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    parts = [torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])]
    hist = class_histogram(labels, parts, 4)
    assert hist.tolist() == [[1, 1, 0, 0], [0, 1, 3, 0]]
    text = format_histogram(hist)
    lines = text.splitlines()
    assert lines[0].split() == ["client", "n", "0", "1", "2", "3"]
    assert lines[2].split() == ["0", "2", "1", "1", "0", "0"]
    assert lines[-1].split() == ["total", "6", "1", "2", "3", "0"]
    with pytest.raises(ValueError, match="outside"):
        class_histogram(labels, parts, 2)


def test_format_histogram_elides_many_clients():
    hist = torch.ones(200, 3, dtype=torch.long)
    text = format_histogram(hist, max_rows=10)
    assert "..." in text and len(text.splitlines()) == 1 + 1 + 10 + 1 + 1 + 1
    assert text.splitlines()[-1].split() == ["total", "600", "200", "200", "200"]


@settings(max_examples=30, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=80),
    num_clients=st.integers(1, 8),
    alpha=st.floats(0.05, 20.0),
    seed=st.integers(0, 2**31),
)
def test_property_partitions_are_exact_covers(labels, num_clients, alpha, seed):
    y = torch.tensor(labels)
    if num_clients > len(y):
        with pytest.raises(ValueError):
            partition_indices(y, num_clients, "iid")
        return
    assert_exact_cover(partition_indices(y, num_clients, "iid", seed=seed), len(y))
    # min_size=0: with few samples per class a positive minimum can be unreachable (FedML's
    # floor-of-cumsum cuts hand a class's single sample to the last eligible client)
    parts = partition_indices(y, num_clients, "dirichlet", alpha=alpha, seed=seed, min_size=0)
    assert_exact_cover(parts, len(y))


def _fedml_hetero(labels: np.ndarray, client_num: int, alpha: float, seed: int) -> list[list[int]]:
    """FedML's ``non_iid_partition_with_dirichlet_distribution`` as FedML runs it: NumPy's
    global RNG seeded by ``fedml.init``, min size 10 (transcribed from its description)."""
    np.random.seed(seed)
    n = labels.shape[0]
    min_size = 0
    while min_size < 10:
        batches: list[list[int]] = [[] for _ in range(client_num)]
        for k in range(int(labels.max()) + 1):
            idx_k = np.where(labels == k)[0]
            np.random.shuffle(idx_k)
            p = np.random.dirichlet(np.repeat(alpha, client_num))
            p = np.array([q * (len(b) < n / client_num) for q, b in zip(p, batches)])
            p = p / p.sum()
            cuts = (np.cumsum(p) * len(idx_k)).astype(int)[:-1]
            batches = [b + part.tolist() for b, part in zip(batches, np.split(idx_k, cuts))]
        min_size = min(len(b) for b in batches)
    for b in batches:
        np.random.shuffle(b)
    return batches


@pytest.mark.parametrize("seed", [0, 3])
def test_dirichlet_reproduces_fedml_split_for_the_same_seed(seed):
    labels = np.random.default_rng(7).integers(0, 10, size=3000)
    ours = partition_indices(torch.as_tensor(labels), 6, "hetero", alpha=0.5, seed=seed)
    state = np.random.get_state()
    try:
        theirs = _fedml_hetero(labels, 6, 0.5, seed)
    finally:
        np.random.set_state(state)
    assert [p.tolist() for p in ours] == theirs
