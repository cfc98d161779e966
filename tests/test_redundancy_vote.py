"""Majority vote: liars outvoted, ties fall back to the coordinate-wise median, tolerance."""

from __future__ import annotations

import pytest
import torch

from shieldwall.redundancy import build_placement
from shieldwall.redundancy.vote import gather_replicas, majority_vote, vote_replicas


def _honest(placement, d=6, seed=0, noise=0.0):
    g = torch.Generator().manual_seed(seed)
    files = torch.randn(placement.num_files, d, generator=g, dtype=torch.float64)
    idx = torch.tensor(placement.files_of_worker)  # (K, l)
    grads = files[idx].clone()  # (K, l, d)
    if noise:
        grads *= 1 + noise * torch.randn(grads.shape, generator=g, dtype=torch.float64)
    return files, grads


@pytest.mark.parametrize("scheme,k,r", [("mols", 15, 3), ("rama_two", 25, 5), ("detox", 15, 3)])
def test_one_liar_per_file_is_outvoted(scheme, k, r):
    p = build_placement(scheme, k, r)
    files, grads = _honest(p, noise=1e-9)  # honest replicas agree only up to tolerance
    liars = {}
    for f in range(p.num_files):  # corrupt the first replica of every file
        w, slot = int(p.replica_workers[f, 0]), int(p.replica_slots[f, 0])
        grads[w, slot] = -100.0 * files[f]
        liars[f] = w
    res = majority_vote(grads, p)
    assert torch.allclose(res.voted, files, rtol=1e-6)
    assert bool(res.has_majority.all()) and res.num_fallback == 0
    assert (res.majority_size == r - 1).all()
    assert (res.winner == 1).all()  # the lowest-index replica among the largest support
    for f in range(p.num_files):
        assert res.disagreeing_workers(f) == [liars[f]]
    per_worker = res.disagreements_per_worker(k)
    assert int(per_worker.sum()) == p.num_files


def test_exact_values_hand_made():
    a = torch.tensor([1.0, 2.0, 3.0])
    b = torch.tensor([10.0, -20.0, 30.0])
    replicas = torch.stack([torch.stack([b, a, a.clone()]), torch.stack([a, a, a])])
    res = vote_replicas(replicas)
    assert torch.equal(res.voted, torch.stack([a, a]))
    assert res.majority_size.tolist() == [2, 3]
    assert res.disagreed.tolist() == [[True, False, False], [False, False, False]]
    assert res.winner.tolist() == [1, 0]


def test_tie_falls_back_to_coordinate_median():
    a = torch.tensor([1.0, 5.0])
    b = torch.tensor([3.0, -1.0])
    # r = 4, a 2–2 split: mean of the two middle order statistics per coordinate
    res = vote_replicas(torch.stack([a, b, a, b]).unsqueeze(0))
    assert not bool(res.has_majority[0]) and res.winner.tolist() == [-1]
    assert torch.equal(res.voted[0], torch.tensor([2.0, 2.0]))
    assert res.majority_size.tolist() == [2]
    # r = 2 disagreeing: same rule (midpoint)
    res2 = vote_replicas(torch.stack([a, b]).unsqueeze(0))
    assert torch.equal(res2.voted[0], torch.tensor([2.0, 2.0]))


def test_all_different_falls_back_to_median_for_odd_r():
    reps = torch.tensor([[[1.0, 9.0], [5.0, 2.0], [3.0, 4.0]]])
    res = vote_replicas(reps)
    assert not bool(res.has_majority[0])
    assert torch.equal(res.voted[0], torch.tensor([3.0, 4.0]))
    assert res.majority_size.tolist() == [1]


def test_tolerance_is_respected():
    a = torch.tensor([1.0, 100.0], dtype=torch.float64)
    close = a * (1 + 1e-7)
    far = a * (1 + 1e-3)
    reps = torch.stack([a, close, far]).unsqueeze(0)
    res = vote_replicas(reps, rtol=1e-5, atol=0.0)
    assert bool(res.has_majority[0]) and res.majority_size.tolist() == [2]
    assert res.disagreed.tolist() == [[False, False, True]]
    strict = vote_replicas(reps, rtol=0.0, atol=0.0)  # exact equality only: all different
    assert not bool(strict.has_majority[0])
    assert torch.equal(strict.voted[0], close)  # the median
    loose = vote_replicas(reps, rtol=1e-2, atol=0.0)
    assert loose.majority_size.tolist() == [3]
    atol_only = vote_replicas(torch.tensor([[[0.0], [1e-9], [1.0]]]), rtol=0.0, atol=1e-8)
    assert atol_only.majority_size.tolist() == [2]


def test_nan_and_inf_liars():
    a = torch.tensor([1.0, 2.0])
    nan = torch.full((2,), float("nan"))
    res = vote_replicas(torch.stack([nan, a, a]).unsqueeze(0))
    assert torch.equal(res.voted[0], a) and res.disagreed.tolist() == [[True, False, False]]
    inf = torch.full((2,), float("inf"))
    res = vote_replicas(torch.stack([inf, inf, a]).unsqueeze(0))  # two equal liars win
    assert torch.equal(res.voted[0], inf)


def test_fallback_median_leaves_lost_replicas_out():
    # NaN rows are replicas the PS rejected or never received: not values, not the largest one
    nan = torch.full((2,), float("nan"))
    h, liar = torch.tensor([1.0, 1.0]), torch.tensor([50.0, -50.0])
    res = vote_replicas(torch.stack([h, h, liar, nan]).unsqueeze(0))  # r = 4, 2 < r′ = 3
    assert not bool(res.has_majority[0]) and torch.equal(res.voted[0], h)
    res = vote_replicas(torch.stack([h, liar, nan]).unsqueeze(0))  # the midpoint, not the max
    assert torch.equal(res.voted[0], torch.tensor([25.5, -24.5]))
    for reps in ([h, nan, nan], [nan, h]):  # one replica arrived: the file keeps its value
        assert torch.equal(vote_replicas(torch.stack(reps).unsqueeze(0)).voted[0], h)
    assert bool(vote_replicas(torch.stack([nan, nan, nan]).unsqueeze(0)).voted.isnan().all())


def test_majority_of_liars_wins_which_is_what_c_max_counts():
    p = build_placement("mols", 15, 3)
    files, grads = _honest(p)
    adversaries = [0, 5]  # squares 0 and 1 share exactly one file
    shared = set(p.files_of_worker[0]) & set(p.files_of_worker[5])
    for w in adversaries:
        grads[w] = 7.0
    res = majority_vote(grads, p)
    lost = {f for f in range(p.num_files) if not torch.allclose(res.voted[f], files[f])}
    assert lost == shared


def test_flattened_input_and_shape_errors():
    p = build_placement("rama_two", 9, 3)
    _, grads = _honest(p, d=4)
    a = majority_vote(grads, p)
    b = majority_vote(grads.reshape(-1, 4), p)
    assert torch.equal(a.voted, b.voted)
    assert gather_replicas(grads, p).shape == (p.num_files, 3, 4)
    with pytest.raises(ValueError, match=r"\(K, l, d\) = \(9, 3, d\)"):
        majority_vote(grads[:, :2], p)
    with pytest.raises(ValueError, match="K·l = 9·3 = 27 rows"):
        majority_vote(grads.reshape(-1, 4)[:5], p)


def test_vectorised_over_many_coordinates():
    p = build_placement("mols", 21, 3)
    files, grads = _honest(p, d=10_000)
    grads[3, 2] += 1.0
    res = majority_vote(grads, p)
    assert torch.equal(res.voted, files)
    assert res.disagreed.sum() == 1


def test_liar_within_tolerance_does_not_win_against_an_exact_majority():
    # replica 0 lies by ~ the whole tolerance on every coordinate: it agrees with the two honest
    # (bit-identical) copies, so all three have support 3; the exact majority must still win
    h = torch.randn(64, generator=torch.Generator().manual_seed(0))
    liar = h + torch.sign(h) * 0.99 * (1e-8 + 1e-5 * h.abs())
    res = vote_replicas(torch.stack([liar, h, h.clone()]).unsqueeze(0), rtol=1e-5, atol=1e-8)
    assert torch.equal(res.voted[0], h) and res.winner.tolist() == [1]
    assert res.majority_size.tolist() == [3] and not bool(res.disagreed.any())
    # r = 5: a second liar close to the first but not to h gives the first liar support 5 > 4
    far = liar + torch.sign(h) * 0.99 * (1e-8 + 1e-5 * liar.abs())
    res = vote_replicas(torch.stack([liar, far, h, h.clone(), h.clone()]).unsqueeze(0),
                        rtol=1e-5, atol=1e-8)
    assert torch.equal(res.voted[0], h) and res.winner.tolist() == [2]
    assert res.disagreed.tolist() == [[False, True, False, False, False]]


def test_replicas_agree_is_symmetric_isclose_on_special_values():
    from shieldwall.redundancy.vote import replicas_agree

    vals = [0.0, -0.0, 1.0, -1.0, 1e-9, 1 + 1e-6, 1 + 1e-4, 3e38, -3e38, 1e30,
            float("inf"), float("-inf"), float("nan")]
    for dtype in (torch.float32, torch.float64):
        v = torch.tensor(vals, dtype=dtype)
        a, b = (g.reshape(-1, 1) for g in torch.meshgrid(v, v, indexing="ij"))
        want = (torch.isclose(a, b, rtol=1e-5, atol=1e-8)
                | torch.isclose(b, a, rtol=1e-5, atol=1e-8)).all(dim=-1)
        assert torch.equal(replicas_agree(a, b, rtol=1e-5, atol=1e-8), want)


@pytest.mark.parametrize("attack", ["copy", "near", "far", "nan", "none"])
def test_simulated_vote_equals_the_vote_of_every_replica(attack):
    """redundant_step votes without building the (F, r, d) replicas; same answer as _vote."""
    from shieldwall.redundancy.training import _vote, _vote_simulated

    g = torch.Generator().manual_seed(3)
    nf, r, d = 9, 3, 40
    honest = torch.randn(nf, d, generator=g)
    honest[4, 7] = float("inf")  # a non-finite honest file goes through the full vote too
    adv = torch.rand(nf, r, generator=g) < 0.4
    adv[0] = True  # a file held by adversaries only
    bad = {"copy": honest.clone(), "near": honest + 1e-9, "far": honest + 5.0,
           "nan": torch.full_like(honest, float("nan")), "none": None}[attack]
    if bad is not None:
        bad[1] = honest[1]  # some files copied exactly whatever the attack
    replicas = honest.unsqueeze(1).expand(nf, r, d)
    if bad is not None:
        replicas = torch.where(adv.unsqueeze(-1), bad.unsqueeze(1), replicas)
    want = _vote(replicas, adv, 1e-5, 1e-8)
    got = _vote_simulated(honest, bad, adv, 1e-5, 1e-8)
    torch.testing.assert_close(got[0], want[0], equal_nan=True, rtol=0, atol=0)
    assert got[1:] == want[1:]
