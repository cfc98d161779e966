"""Distortion analysis: c_max(q) against a brute force, DETOX's closed form, the paper's values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shieldwall.redundancy import Placement, build_placement
from shieldwall.redundancy.analysis import (
    distorted_files,
    distortion,
    distortion_table,
    second_eigenvalue,
    spectral_bound,
    upper_bounds,
    worst_case_adversaries,
)
from shieldwall.redundancy.detox import detox_worst_adversaries
from shieldwall.redundancy.symmetry import Symmetry


def brute_force_cmax(p: Placement, q: int) -> int:
    """max over all q-subsets of #files with ≥ ⌊r/2⌋+1 replicas in the subset."""
    inc = p.incidence.numpy().astype(np.int64)
    need = p.replication // 2 + 1
    best = 0
    subsets = itertools.combinations(range(p.num_workers), q)
    while chunk := list(itertools.islice(subsets, 4096)):
        idx = np.array(chunk, dtype=np.int64).reshape(len(chunk), q)
        hits = inc[idx].sum(axis=1)  # (subsets, F)
        best = max(best, int((hits >= need).sum(axis=1).max()))
    return best


SMALL = [
    ("mols", 15, 3, {}, range(0, 8)),
    ("rama_one", 15, 3, {}, range(0, 6)),
    ("mols", 12, 3, {}, range(0, 7)),
    ("rama_two", 9, 3, {}, range(0, 6)),
    ("rama_two", 9, 3, {"m": 6}, range(0, 5)),
    ("rama_two", 25, 5, {}, range(0, 5)),
    ("mols", 8, 2, {}, range(0, 5)),
    ("mols", 20, 4, {}, range(0, 6)),  # even r: r′ = 3
]


@pytest.mark.parametrize("scheme,k,r,params,qs", SMALL)
def test_cmax_matches_brute_force(scheme, k, r, params, qs):
    p = build_placement(scheme, k, r, **params)
    for row in distortion_table(p, qs):
        assert row.exact, row
        assert row.c_max == brute_force_cmax(p, row.q), row.q
        assert len(set(row.adversaries)) == row.q == len(row.adversaries)
        assert distorted_files(p, row.adversaries) == row.c_max
        assert row.epsilon == row.c_max / p.num_files
        assert row.upper_bound == row.c_max
        if row.spectral_bound is not None:
            assert row.c_max <= row.spectral_bound + 1e-9


@pytest.mark.parametrize("method", ["resolvable", "milp", "branch_and_bound", "exhaustive"])
def test_every_exact_method_agrees(method):
    p = build_placement("mols", 15, 3)
    got = [r.c_max for r in distortion_table(p, range(0, 6), method=method)]
    assert got == [0, 0, 1, 3, 5, 8]


def test_branch_and_bound_without_symmetry_and_on_a_custom_placement():
    p = build_placement("rama_two", 9, 3)
    custom = Placement(p.files_of_worker)  # same graph, no orbit representatives known
    assert custom.orbit_reps is None
    for q in range(0, 6):
        want = brute_force_cmax(p, q)
        assert distortion(custom, q, method="branch_and_bound").c_max == want
        assert distortion(custom, q, method="milp").c_max == want


def test_paper_values_k15_mols_and_ramanujan_case1():
    """ByzShield's c_max for (K, f, l, r) = (15, 25, 5, 3) (authors' util.py, q = 0…8)."""
    paper = [0, 0, 1, 3, 5, 8, 12, 14, 17]
    for scheme in ("mols", "rama_one"):
        rows = distortion_table(build_placement(scheme, 15, 3), range(0, 9))
        assert [r.c_max for r in rows] == paper


def test_paper_values_k25_ramanujan_case2():
    """ByzShield's c_max for Ramanujan Case 2, (K, f, l, r) = (25, 25, 5, 5), q = 0…7."""
    rows = distortion_table(build_placement("rama_two", 25, 5), range(0, 8))
    assert [r.c_max for r in rows] == [0, 0, 0, 1, 1, 2, 4, 5]


@pytest.mark.parametrize("k,r,fpg", [(15, 3, 1), (25, 5, 1), (12, 4, 1), (12, 2, 2), (9, 3, 3)])
def test_detox_closed_form(k, r, fpg):
    p = build_placement("detox", k, r, files_per_group=fpg)
    rp = (r + 2) // 2 if r % 2 == 0 else (r + 1) // 2  # ⌈(r+1)/2⌉
    for q in range(0, k + 1):
        row = distortion(p, q)
        assert row.method == "closed_form" and row.exact
        assert row.c_max == min(q // rp, k // r) * fpg
        assert distorted_files(p, row.adversaries) == row.c_max
        if q <= 6:
            assert row.c_max == brute_force_cmax(p, q)
        assert distortion(p, q, method="milp").c_max == row.c_max


def test_detox_worst_attack_matches_byzshield():
    # ByzShield's 1-based "worst" attack for K=15, r=3, q=5: workers 1,2,4,5,7
    assert detox_worst_adversaries(5, 15, 3) == [0, 1, 3, 4, 6]
    assert distortion(build_placement("detox", 15, 3), 5).adversaries == [0, 1, 3, 4, 6]


def test_baseline_is_q_files():
    p = build_placement("baseline", 10, 1)
    assert [r.c_max for r in distortion_table(p, range(11))] == list(range(11))


def test_spectral_bound_is_the_papers_mols_formula():
    p = build_placement("mols", 35, 5)
    l, r = 7, 5
    assert second_eigenvalue(p) == pytest.approx(1 / r)
    for q in range(1, 14):
        paper = (2 * q**2 / r) / (1 + (r - 1) * q / (r * l))
        assert spectral_bound(p, q) == pytest.approx(paper)
    assert upper_bounds(p, 13)["counting"] == 13 * 7 // 3


def test_time_limited_search_reports_a_valid_bound():
    p = build_placement("mols", 35, 5)
    row = distortion(p, 11, time_limit=0.2)
    assert distorted_files(p, row.adversaries) == row.c_max and len(row.adversaries) == 11
    assert row.c_max <= row.upper_bound <= min(upper_bounds(p, 11).values())
    assert row.exact == (row.c_max == row.upper_bound)


def test_worst_case_adversaries_and_errors():
    p = build_placement("mols", 15, 3)
    adv = worst_case_adversaries(p, 4)
    assert distorted_files(p, adv) == 5
    with pytest.raises(ValueError, match=r"q must be in 0\.\.15"):
        distortion(p, 16)
    with pytest.raises(ValueError, match="unknown method"):
        distortion(p, 2, method="magic")
    with pytest.raises(ValueError, match="grouped placements"):
        distortion(p, 2, method="closed_form")


@pytest.mark.parametrize(
    "scheme,k,r,qs",
    [("mols", 35, 5, (5, 6)), ("rama_one", 35, 5, (6,)), ("rama_two", 25, 5, (6, 8)),
     ("mols", 27, 3, (5, 7)), ("mols", 15, 3, (1, 2, 3, 4, 6, 8)), ("rama_two", 9, 3, (2, 3))],
)
def test_symmetry_pruning_does_not_change_the_optimum(scheme, k, r, qs):
    """Class orbits + translation group, or orbit representatives, versus no symmetry at all."""
    p = build_placement(scheme, k, r)
    reps_only = Placement(p.files_of_worker, classes=p.classes, orbit_reps=p.orbit_reps)
    plain = Placement(p.files_of_worker, classes=p.classes)
    for q in qs:
        want = distortion(plain, q).c_max
        assert distortion(p, q).c_max == want, (scheme, q)
        assert distortion(reps_only, q).c_max == want, (scheme, q)
    if k <= 15:  # the integer program with and without the orbit-representative split
        q = qs[-1]
        assert distortion(p, q, method="milp").c_max == distortion(
            Placement(p.files_of_worker), q, method="milp").c_max == want


def test_paper_values_k35_mols_and_ramanujan_case1():
    """ByzShield's c_max for (K, f, l, r) = (35, 49, 7, 5) (authors' util.py), q = 8…10."""
    paper = {8: 8, 9: 10, 10: 11}
    for scheme in ("mols", "rama_one"):
        p = build_placement(scheme, 35, 5)
        assert {q: distortion(p, q).c_max for q in paper} == paper


def test_symmetry_is_checked():
    p = build_placement("rama_two", 9, 3)
    sym = p.symmetry
    bad_group = Symmetry([list(range(9)), [1, 2, 0, 3, 4, 5, 6, 7, 8]], sym.class_orbits)
    with pytest.raises(ValueError, match="not closed|not an automorphism"):
        Placement(p.files_of_worker, classes=p.classes, symmetry=bad_group)
    not_auto = Symmetry([list(range(9)), [1, 0, 2, 3, 4, 5, 6, 7, 8]], sym.class_orbits)
    with pytest.raises(ValueError, match="not an automorphism"):
        Placement(p.files_of_worker, classes=p.classes, symmetry=not_auto)
    with pytest.raises(ValueError, match="needs the parallel classes"):
        Placement(p.files_of_worker, symmetry=sym)


def test_resolvable_search_needs_classes():
    p = build_placement("rama_two", 9, 3)
    with pytest.raises(ValueError, match="parallel classes"):
        distortion(Placement(p.files_of_worker), 2, method="resolvable")
    with pytest.raises(ValueError, match="does not hold every file exactly once"):
        Placement(p.files_of_worker, classes=[[0, 1, 3], [2, 4, 5], [6, 7, 8]])


def test_authors_worst_case_sets_attain_c_max_in_our_numbering():
    """ByzShield's hard-coded worst-case sets (util.py ``hard_byz_set``, 1-based ranks) distort
    exactly c_max files in our placements: same worker numbering as the authors' code."""
    hard = {
        ("mols", 15, 3): {3: [1, 6, 12], 5: [1, 2, 6, 7, 14], 7: [1, 2, 3, 6, 8, 11, 12]},
        ("rama_two", 25, 5): {7: [1, 2, 3, 6, 7, 11, 25], 12: [1, 2, 3, 6, 7, 8, 12, 14, 16, 19,
                                                             22, 24]},
        ("mols", 35, 5): {9: [1, 8, 9, 11, 20, 22, 24, 25, 32],
                          13: [1, 2, 3, 8, 9, 10, 16, 22, 26, 28, 31, 32, 33]},
    }
    c_q_max = {("mols", 15, 3): {3: 3, 5: 8, 7: 14}, ("rama_two", 25, 5): {7: 5, 12: 17},
               ("mols", 35, 5): {9: 10, 13: 20}}
    for key, sets in hard.items():
        p = build_placement(*key)
        for q, ranks in sets.items():
            assert distorted_files(p, [w - 1 for w in ranks]) == c_q_max[key][q], (key, q)
