"""Placements: bi-regularity, MOLS orthogonality, Ramanujan spectra, errors, file I/O."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from shieldwall.redundancy import PLACEMENTS, Placement, PlacementError, build_placement
from shieldwall.redundancy.gf import GaloisField, is_prime_power, prime_power
from shieldwall.redundancy.mols import latin_squares

CASES = [
    ("baseline", 7, 1, {}),
    ("detox", 15, 3, {}),
    ("detox", 12, 3, {"files_per_group": 2}),
    ("draco-lite", 25, 5, {}),
    ("mols", 15, 3, {}),
    ("mols", 12, 3, {}),  # l = 4 = 2², GF(4)
    ("mols", 16, 2, {}),  # l = 8 = 2³
    ("mols", 27, 3, {}),  # l = 9 = 3²
    ("mols", 35, 5, {}),
    ("rama_one", 15, 3, {}),
    ("rama_one", 21, 3, {}),
    ("rama_one", 35, 5, {}),
    ("rama_two", 25, 5, {}),
    ("rama_two", 9, 3, {"m": 6}),
    ("rama_two", 4, 2, {}),
]


@pytest.mark.parametrize("scheme,k,r,params", CASES)
def test_every_construction_is_biregular(scheme, k, r, params):
    p = build_placement(scheme, k, r, **params)
    inc = p.incidence
    assert inc.shape == (k, p.num_files) and p.num_workers == k and p.replication == r
    assert (inc.sum(dim=0) == r).all(), "every file on exactly r workers"
    assert (inc.sum(dim=1) == p.load).all(), "every worker holds l files"
    assert k * p.load == p.num_files * r
    for w, files in enumerate(p.files_of_worker):
        assert files == sorted(files) and torch.nonzero(inc[w]).flatten().tolist() == files
    for f in range(p.num_files):
        workers = p.workers_of_file(f)
        assert workers == p.replica_workers[f].tolist()
        for w, slot in zip(workers, p.replica_slots[f].tolist()):
            assert p.files_of_worker[w][slot] == f
    p.validate()


def test_sizes_of_the_paper_constructions():
    m = build_placement("mols", 15, 3)
    assert (m.num_files, m.load) == (25, 5)
    r1 = build_placement("rama_one", 35, 5)
    assert (r1.num_files, r1.load) == (49, 7)
    r2 = build_placement("rama_two", 25, 5, m=10)
    assert (r2.num_files, r2.load) == (50, 10)
    d = build_placement("detox", 15, 3)
    assert d.num_files == 5 and d.files_of_worker[:6] == [[0], [0], [0], [1], [1], [1]]
    assert build_placement("baseline", 5, 1).files_of_worker == [[0], [1], [2], [3], [4]]


@pytest.mark.parametrize("order", [2, 3, 4, 5, 7, 8, 9])
def test_latin_squares_are_mutually_orthogonal(order):
    squares = latin_squares(order)
    assert len(squares) == order - 1
    full = set(range(order))
    for sq in squares:
        assert all(set(row) == full for row in sq)
        assert all({sq[i][j] for i in range(order)} == full for j in range(order))
    for a, b in itertools.combinations(squares, 2):
        pairs = {(a[i][j], b[i][j]) for i in range(order) for j in range(order)}
        assert len(pairs) == order * order


@pytest.mark.parametrize("k,r", [(15, 3), (12, 3), (35, 5), (27, 3)])
def test_mols_workers_of_different_squares_share_one_file(k, r):
    p = build_placement("mols", k, r)
    l = p.load
    inc = p.incidence.long()
    shared = inc @ inc.t()
    for a, b in itertools.combinations(range(k), 2):
        expected = 0 if a // l == b // l else 1  # same square: a parallel class, disjoint
        assert shared[a, b] == expected
    sigma = np.linalg.svd(inc.double().numpy(), compute_uv=False)
    assert sigma[0] == pytest.approx(np.sqrt(l * r))
    assert sigma[1] ** 2 / (l * r) == pytest.approx(1 / r)  # μ₁ = 1/r


def test_galois_field_axioms_gf8():
    f = GaloisField(8)
    for a in range(1, 8):
        assert sorted(f.mul[a][b] for b in range(1, 8)) == list(range(1, 8))  # invertible
    for a, b, c in itertools.product(range(8), repeat=3):
        assert f.mul[a][f.add[b][c]] == f.add[f.mul[a][b]][f.mul[a][c]]
    assert prime_power(9) == (3, 2) and prime_power(12) is None and not is_prime_power(1)


def _paper_biadjacency(s: int, m: int) -> np.ndarray:
    """B with block (i, j) = P^{ij}, P the cyclic shift of the authors' code."""
    p = np.zeros((s, s))
    for i in range(1, s + 1):
        for j in range(1, s + 1):
            p[i - 1][j - 1] = 1 if j % s == (i - 1) % s else 0
    return np.block([[np.linalg.matrix_power(p, i * j) for j in range(m)] for i in range(s)])


@pytest.mark.parametrize("k,r", [(15, 3), (21, 3), (35, 5), (10, 2)])
def test_rama_one_is_the_papers_graph_and_ramanujan(k, r):
    s = k // r
    p = build_placement("rama_one", k, r)
    inc = p.incidence.double().numpy()
    assert np.array_equal(inc, _paper_biadjacency(s, r).T)
    sigma = np.linalg.svd(inc, compute_uv=False)
    dl, dr = p.load, p.replication
    assert sigma[0] == pytest.approx(np.sqrt(dl * dr))
    assert sigma[1] == pytest.approx(np.sqrt(s))
    assert sigma[1] <= np.sqrt(dl - 1) + np.sqrt(dr - 1) + 1e-9


@pytest.mark.parametrize("k,r,m", [(25, 5, 5), (25, 5, 10), (9, 3, 3), (9, 3, 6), (49, 7, 7)])
def test_rama_two_is_the_papers_graph_and_ramanujan(k, r, m):
    p = build_placement("rama_two", k, r, m=m)
    inc = p.incidence.double().numpy()
    assert np.array_equal(inc, _paper_biadjacency(r, m))
    sigma = np.linalg.svd(inc, compute_uv=False)
    assert sigma[0] == pytest.approx(np.sqrt(m * r))
    assert sigma[1] == pytest.approx(np.sqrt(m))
    assert sigma[1] <= np.sqrt(m - 1) + np.sqrt(r - 1) + 1e-9


@pytest.mark.parametrize(
    "scheme,k,r,params,needle",
    [
        ("mols", 16, 3, {}, "valid K for r=3: 12, 15, 21"),
        ("mols", 18, 3, {}, "l = K/r = 6 is not a prime power"),
        ("mols", 15, 5, {}, "r=5 > l − 1 = 2"),
        ("rama_one", 15, 5, {}, "r=5 is not < s"),
        ("rama_one", 12, 3, {}, "s = K/r = 4 is not prime"),
        ("rama_two", 16, 4, {}, "(K=25, r=5)"),
        ("rama_two", 20, 5, {}, "K=20 ≠ r² = 25"),
        ("rama_two", 25, 5, {"m": 7}, "valid m: 5, 10"),
        ("detox", 16, 3, {}, "divisible"),
        ("baseline", 15, 3, {}, "replication must be 1"),
        ("mols", 15, 3, {"m": 2}, "takes no parameter m"),
        ("mols", 0, 3, {}, "num_workers ≥ 1"),
    ],
)
def test_invalid_sizes_give_clear_errors(scheme, k, r, params, needle):
    with pytest.raises(PlacementError) as info:
        build_placement(scheme, k, r, **params)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_registry_names_and_aliases():
    assert set(PLACEMENTS.names()) == {"baseline", "detox", "mols", "rama_one", "rama_two", "file"}
    for alias in ("draco-lite", "draco_lite", "Draco-Lite"):
        assert PLACEMENTS.canonical(alias) == "detox"
    with pytest.raises(ValueError, match="valid placement names"):
        PLACEMENTS.get("molz")


def test_json_round_trip(tmp_path):
    p = build_placement("mols", 15, 3)
    path = tmp_path / "p.json"
    p.to_json(path)
    q = Placement.from_file(path)
    assert q.files_of_worker == p.files_of_worker and q.name == "mols"
    assert q.classes == p.classes  # kept, so the class-by-class search still applies
    assert torch.equal(q.incidence, p.incidence)
    via_registry = build_placement("file", 15, 3, path=str(path))
    assert via_registry.files_of_worker == p.files_of_worker
    with pytest.raises(PlacementError, match="not 16"):
        build_placement("file", 16, 3, path=str(path))


def test_csv_rows_and_edge_list(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("# files of each worker\n0,1\n1,2\n2,0\n")
    p = build_placement("file", None, None, path=str(rows))
    assert (p.num_workers, p.num_files, p.replication, p.load) == (3, 3, 2, 2)
    edges = tmp_path / "edges.csv"
    edges.write_text("worker,file\n0,0\n1,0\n2,1\n3,1\n")
    e = build_placement("file", 4, 2, path=str(edges))
    assert e.files_of_worker == [[0], [0], [1], [1]]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("0,1\n1,2\n2\n", "same number of files"),
        ("0,1\n0,1\n0,2\n", "same number of workers"),
        ("0,x\n", "must be integers"),
        ("0,0\n", "lists a file twice"),
        ('{"files_of_worker": [[0], [2]]}', "files on no worker: [1]"),
        ('{"files_of_worker": [[0], [0]], "replication": 3}', "says replication=3"),
        ('{"workers": []}', "expected a JSON object with 'files_of_worker'"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_placement_files_are_rejected_clearly(tmp_path, text, needle):
    path = tmp_path / ("p.json" if text.lstrip().startswith("{") else "p.csv")
    path.write_text(text)
    with pytest.raises(PlacementError) as info:
        build_placement("file", None, None, path=str(path))
    assert needle in str(info.value) and str(path) in str(info.value)


def test_missing_file_and_missing_path():
    with pytest.raises(PlacementError, match="not found"):
        build_placement("file", 3, 1, path="/nonexistent/placement.json")
    with pytest.raises(PlacementError, match="needs path"):
        build_placement("file", 3, 1)


def test_to_dict_is_json():
    d = json.loads(build_placement("rama_two", 9, 3).to_json())
    assert d["num_workers"] == 9 and d["replication"] == 3 and d["params"] == {"s": 3, "m": 3}
