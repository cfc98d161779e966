"""Fault-tolerant data parallel: schedule, detection, correction model and step engine.

Synthetic gradients (no training) except for the exactness test, which uses real sub-batch
gradients of a small model on the embedded digits."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.fault_tolerance import (
    CorrectionBank,
    FaultInjector,
    FaultTolerantStep,
    RedundancySchedule,
    compare_replicas,
    load_ddp_config,
)
from shieldwall.fault_tolerance.correction import prediction_errors
from shieldwall.fault_tolerance.detection import FaultDetector

# ---------------------------------------------------------------------------- schedule


@given(w=st.integers(2, 24), every=st.integers(1, 5), seed=st.integers(0, 3))
@settings(max_examples=40, deadline=None)
def test_schedule_covers_what_it_claims(w: int, every: int, seed: int) -> None:
    sched = RedundancySchedule(w, every, seed)
    steps = 3 * every * (w // 2) + 1
    computed = 0
    for t in range(steps):
        plan = sched.plan(t)
        computed += len(plan.assignments)
        reps = plan.replicas()
        assert sorted(reps) == list(range(w))  # every sub-batch is computed
        for b, idx in reps.items():
            assert plan.assignments[idx[0]].worker == b  # by its owner first
            assert len(idx) == (2 if plan.check else 1)  # the claimed replicas
            workers = [plan.assignments[k].worker for k in idx]
            assert len(set(workers)) == len(workers)  # by distinct workers
        loads = [len(v) for v in plan.worker_map().values()]
        assert loads == [2 if plan.check else 1] * w  # balanced: 2 sub-batches on a check step
        assert plan.check == (t % every == 0)
    over = sched.overhead(steps)
    checks = math.ceil(steps / every)
    assert over["computed"] == computed == w * (steps + checks)
    assert over["extra"] == pytest.approx(checks / steps)
    assert over["redundant_share"] == pytest.approx(checks / (steps + checks))


@given(w=st.integers(2, 24), seed=st.integers(0, 5))
@settings(max_examples=40, deadline=None)
def test_pairs_rotate_through_all_partners(w: int, seed: int) -> None:
    """Within a cycle, k check steps give every worker 2k new partners; a cycle meets all."""
    sched = RedundancySchedule(w, 1, seed)
    for cycle in range(2):
        met: list[set[int]] = [set() for _ in range(w)]
        for k in range(w // 2):
            plan = sched.plan(cycle * (w // 2) + k)
            for idx in plan.replicas().values():
                wa, wb = (plan.assignments[i].worker for i in idx)
                met[wa].add(wb)
                met[wb].add(wa)
            if k + 1 <= (w - 1) // 2:
                assert all(len(m) == 2 * (k + 1) for m in met)
        assert all(m == set(range(w)) - {i} for i, m in enumerate(met))


def test_schedule_without_checks_and_errors() -> None:
    sched = RedundancySchedule(4, 0)
    assert not any(sched.plan(t).check for t in range(10))
    assert sched.overhead(10)["extra"] == 0.0
    with pytest.raises(ValueError, match="at least 2 workers"):
        RedundancySchedule(1, 2)
    line = RedundancySchedule(4, 1, 0).plan(0).format()
    assert line == "step 0 check s=1: w0→[0,3] w1→[1,0] w2→[2,1] w3→[3,2]"


# ---------------------------------------------------------------------------- detection


def _rows(plan, truth: torch.Tensor, injector: FaultInjector) -> torch.Tensor:
    batches = [a.batch for a in plan.assignments]
    workers = [a.worker for a in plan.assignments]
    return injector.apply(truth[batches], workers, batches, plan.step)


def _detect(w: int, faulty: list[int], fault: str, bound: int, seed: int, steps: int, **kw):
    sched = RedundancySchedule(w, 1, seed)
    inj = FaultInjector(fault, faulty, w, seed=seed, params=kw)
    det = FaultDetector(w, bound)
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        plan = sched.plan(t)
        det.observe(plan, _rows(plan, torch.randn(w, 32, generator=gen), inj))
    return det


@pytest.mark.parametrize("seed", range(6))
def test_noisy_workers_convicted_within_ceil_half_bound_plus_one(seed: int) -> None:
    """Independent noise disagrees with every partner: ⌈(f̂+1)/2⌉ check steps suffice."""
    w, faulty = 16, [0, 1, 2, 3, 4]
    det = _detect(w, faulty, "trivial_noise", 5, seed, steps=3, sigma=1.0)
    assert set(det.convicted) == set(faulty)
    assert max(det.convicted.values()) <= math.ceil((5 + 1) / 2) - 1  # 0-based step


@pytest.mark.parametrize("seed", range(4))
def test_colluding_sign_flippers_convicted_within_bound_check_steps(seed: int) -> None:
    """Deterministic faults agree with each other; f̂ check steps still suffice."""
    det = _detect(16, [0, 1, 2, 3, 4], "sign_flip", 5, seed, steps=5)
    assert set(det.convicted) == {0, 1, 2, 3, 4}


@given(
    w=st.integers(3, 16),
    data=st.data(),
    seed=st.integers(0, 1000),
)
@settings(max_examples=60, deadline=None)
def test_conviction_rule_never_convicts_an_honest_worker(w: int, data, seed: int) -> None:
    """Whatever faulty workers return (right, noise, or a colluding constant), honest workers
    are never convicted as long as at most f̂ workers are faulty."""
    bound = data.draw(st.integers(0, w - 1))
    faulty = data.draw(st.lists(st.integers(0, w - 1), max_size=bound, unique=True))
    modes = data.draw(st.lists(st.sampled_from(["ok", "noise", "collude"]), min_size=w,
                               max_size=w))
    sched = RedundancySchedule(w, 1, seed)
    det = FaultDetector(w, bound)
    gen = torch.Generator().manual_seed(seed)
    for t in range(w):
        plan = sched.plan(t)
        truth = torch.randn(w, 8, generator=gen)
        rows = truth[[a.batch for a in plan.assignments]].clone()
        for k, a in enumerate(plan.assignments):
            if a.worker in faulty:
                mode = modes[(a.worker + t) % w]
                if mode == "noise":
                    rows[k] += torch.randn(8, generator=gen)
                elif mode == "collude":
                    rows[k] = 7.0
        det.observe(plan, rows)
        assert set(det.convicted) <= set(faulty)


def test_compare_replicas_tolerance_and_nan() -> None:
    plan = RedundancySchedule(2, 1).plan(0)  # w0→[0,1], w1→[1,0]
    rows = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0 + 1e-7], [float("nan"), 4.0]])
    comp = compare_replicas(plan, rows)
    agree = {b: ok for b, *_, ok in comp.pairs}
    assert agree == {0: True, 1: False}
    assert comp.vouched == {0, 1}


def test_compare_replicas_huge_rows_do_not_agree_by_an_infinite_scale() -> None:
    """Rows of 1e20 (d = 1000) overflow a float32 norm: the scale was inf, so 1e20 and 1.001e20
    (0.1% apart, 100× rtol) agreed and vouched for two faulty workers. Identical ones agree."""
    plan = RedundancySchedule(2, 1).plan(0)  # rows: w0→b0, w1→b1, w1→b0, w0→b1
    ones = torch.ones(1000)
    rows = torch.stack([1e20 * ones, 1e20 * ones, 1.001e20 * ones, 1e20 * ones])
    comp = compare_replicas(plan, rows)
    assert {b: ok for b, *_, ok in comp.pairs} == {0: False, 1: True}


# ---------------------------------------------------------------------------- correction


def _pairs(fault, steps: int, d: int = 3000, seed: int = 0):
    """(y, m, x) with x a sub-batch gradient, m the mean of 11 others, y = fault(x)."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(d, generator=gen) * 0.1
    mu = torch.randn(d, generator=gen) * scale
    out = []
    for _ in range(steps):
        centre = mu + 0.5 * scale * torch.randn(d, generator=gen)
        xs = centre + scale * torch.randn(12, d, generator=gen)
        x, m = xs[0], xs[1:].mean(0)
        out.append((fault(x, gen, scale), m, x))
    return out


def _held_out(fault, train: int = 40, test: int = 20) -> dict[str, float]:
    pairs = _pairs(fault, train + test)
    bank = CorrectionBank(pairs[0][0].numel())
    for t, (y, m, x) in enumerate(pairs[:train]):
        bank.learn(t, [(0, y, m, x)])
    model = bank.models[0]
    errs = {"mse": 0.0, "raw": 0.0, "exclude": 0.0, "energy": 0.0}
    for y, m, x in pairs[train:]:  # never learned
        errs["mse"] += prediction_errors(model.predict(y, m), x)[0] / test
        errs["raw"] += prediction_errors(y, x)[0] / test
        errs["exclude"] += prediction_errors(m, x)[0] / test
        errs["energy"] += float(x.double().square().mean()) / test
    return errs


@pytest.mark.parametrize(
    "fault",
    [
        lambda x, g, s: -x,  # sign flip
        lambda x, g, s: 3.0 * x,  # scaling
        lambda x, g, s: 0.5 * x - 0.02,  # scaling and a common bias
    ],
    ids=["sign_flip", "scale", "scale_bias"],
)
def test_correction_inverts_systematic_faults(fault) -> None:
    """Bound: held-out MSE below 1e-9 of the gradient's energy (exact up to rounding)."""
    e = _held_out(fault)
    assert e["mse"] < 1e-9 * e["energy"]


def test_correction_of_per_coordinate_bias_up_to_shrinkage() -> None:
    """Bound: a random per-coordinate bias is removed up to the prior's shrinkage: held-out
    MSE below 5% of the uncorrected row's."""
    bias = torch.randn(3000, generator=torch.Generator().manual_seed(5)) * 0.05
    e = _held_out(lambda x, g, s: x + bias)
    assert e["mse"] < 0.05 * e["raw"]


def test_correction_of_large_noise_is_no_worse_than_exclusion() -> None:
    """σ far above the gradient's spread: nothing of x is left in y; the best is shrinkage to
    the others' mean. Bound: within 10% of exclusion, below 1% of the uncorrected row."""
    e = _held_out(lambda x, g, s: x + torch.randn(x.shape, generator=g))
    assert e["mse"] <= 1.1 * e["exclude"]
    assert e["mse"] <= 0.01 * e["raw"]


def test_correction_of_moderate_noise_beats_both_baselines() -> None:
    """σ comparable to the spread: y carries information; bound: 20% below both baselines."""
    e = _held_out(lambda x, g, s: x + s * torch.randn(x.shape, generator=g))
    assert e["mse"] <= 0.8 * min(e["raw"], e["exclude"])


def test_safeguard_falls_back_to_exclusion() -> None:
    bank = CorrectionBank(4)
    y, m, x = torch.ones(4), torch.zeros(4), torch.zeros(4)
    bank.learn(0, [(0, y, m, x)])
    assert torch.equal(bank.predict(0, y, m), m)  # not scored yet: exclusion
    assert bank.fallbacks == 1


# ---------------------------------------------------------------------------- engine


@pytest.fixture(scope="module")
def digits_grads():
    torch.manual_seed(0)
    from shieldwall.data import load_dataset
    from shieldwall.fault_tolerance.gradients import SubBatchGradients
    from shieldwall.models import build_model

    data = load_dataset("digits")
    model = build_model("lr", data.input_shape, data.num_classes)
    grads = SubBatchGradients(model)
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    idx = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(1))
    return grads, params, data.train_x, data.train_y, idx[:128].view(16, 8)


def test_replica_correction_reproduces_the_fault_free_gradient_exactly(digits_grads) -> None:
    grads, params, x, y, idx = digits_grads
    w, faulty = 16, [0, 1, 2, 3, 4]
    sched = RedundancySchedule(w, 1, seed=0)
    inj = FaultInjector("trivial_noise", faulty, w, sigma=1.0)
    engine = FaultTolerantStep(w, 5, correct=True)
    for t in range(3):  # convict
        plan = sched.plan(t)
        g, _ = grads(params, x[idx[[a.batch for a in plan.assignments]]],
                     y[idx[[a.batch for a in plan.assignments]]])
        engine(plan, inj.apply(g, [a.worker for a in plan.assignments],
                               [a.batch for a in plan.assignments], t))
    assert set(engine.convicted) == set(faulty)
    # a later check step whose shift pairs every faulty worker with an honest one (s >= 5)
    t = next(t for t in range(3, 20) if sched.shift(t) >= 5)
    plan = sched.plan(t)
    sel = idx[[a.batch for a in plan.assignments]]
    clean, _ = grads(params, x[sel], y[sel])
    out = engine(plan, inj.apply(clean, [a.worker for a in plan.assignments],
                                 [a.batch for a in plan.assignments], t))
    assert out.counts()["replica"] == 5 and out.counts()["owner"] == 11
    fault_free, _ = grads(params, x[idx], y[idx])  # plain data parallel, w rows
    assert torch.equal(out.aggregate, fault_free.mean(0))
    reference = FaultTolerantStep(w, 5)(plan, clean).aggregate
    assert torch.equal(out.aggregate, reference)


def test_plain_step_excludes_or_corrects_convicted_rows() -> None:
    w = 6
    sched = RedundancySchedule(w, 2, seed=0)
    inj = FaultInjector("sign_flip", [2], w)
    gen = torch.Generator().manual_seed(0)
    excl, corr = FaultTolerantStep(w, 1), FaultTolerantStep(w, 1, correct=True)
    for t in range(12):
        plan = sched.plan(t)
        truth = torch.randn(w, 16, generator=gen)
        rows = _rows(plan, truth, inj)
        a, b = excl(plan, rows), corr(plan, rows)
        if t >= 1 and not plan.check:  # worker 2 convicted at step 0 (f̂ = 1)
            honest = [i for i in range(w) if i != 2]
            assert torch.allclose(a.aggregate, truth[honest].mean(0))
            assert a.sources[2] == "excluded"
        if t >= 6 and not plan.check:  # sign flip learned: corrected row is the truth
            assert b.sources[2] == "model"
            assert torch.allclose(b.aggregate, truth.mean(0), atol=1e-6)
    assert dict(excl.convicted) == {2: 0}


def _convicted_sign_flipper(defense: str = "mean"):
    """w = 6, worker 2 a ×1 sign flipper, convicted at step 0 and its model trusted by step 8
    (the set-up of the test above). Returns ``(engine, schedule, injector, generator)``."""
    w = 6
    sched = RedundancySchedule(w, 2, seed=0)
    inj = FaultInjector("sign_flip", [2], w)
    gen = torch.Generator().manual_seed(0)
    engine = FaultTolerantStep(w, 1, correct=True, defense=defense)
    for t in range(8):
        plan = sched.plan(t)
        engine(plan, _rows(plan, torch.randn(w, 16, generator=gen), inj))
    assert engine.convicted == {2: 0} and engine.bank.trusted(2)
    return engine, sched, inj, gen


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e30])
def test_corrected_row_of_a_nonfinite_or_huge_row_is_bounded(bad: float) -> None:
    """A convicted worker's NaN/Inf row is corrected to m (exclusion); a huge one is clipped to
    NORM_MARGIN × the largest trusted norm. Before: the aggregate was NaN/Inf."""
    engine, sched, inj, gen = _convicted_sign_flipper()
    plan = sched.plan(9)  # plain
    truth = torch.randn(6, 16, generator=gen)
    rows = _rows(plan, truth, inj)
    rows[2] = bad
    fallbacks = engine.bank.fallbacks
    out = engine(plan, rows)
    assert out.sources[2] == "model"
    honest = truth[[0, 1, 3, 4, 5]]
    if bad != 1e30:  # x̂ = m: the mean of 5 rows and their mean is their mean
        assert torch.allclose(out.aggregate, honest.mean(0), atol=1e-6)
        assert engine.bank.fallbacks == fallbacks + 1
    else:  # x̂ = −β·1e30·1 with β ≈ 1, clipped to norm R = 2·max‖x_b‖ along −1/√16
        r = 2 * float(honest.norm(dim=1).max())
        expect = (honest.sum(0) - r * torch.ones(16) / 4) / 6
        assert torch.allclose(out.aggregate, expect, atol=1e-5)
        assert engine.bank.clipped == 1


def test_nonfinite_rows_never_reach_the_rule() -> None:
    """An unconvicted worker's NaN row on a plain step is left out (before: a NaN aggregate);
    with the median and f = 0 a NaN corrected row no longer raises."""
    engine, sched, inj, gen = _convicted_sign_flipper()
    plan = sched.plan(9)
    truth = torch.randn(6, 16, generator=gen)
    rows = _rows(plan, truth, inj)
    rows[4, 3] = float("nan")
    out = engine(plan, rows)
    assert out.sources[4] == "excluded" and out.num_rows == 5
    assert torch.allclose(out.aggregate, truth[[0, 1, 2, 3, 5]].mean(0), atol=1e-6)
    engine, sched, inj, gen = _convicted_sign_flipper("median")
    rows = _rows(plan, torch.randn(6, 16, generator=gen), inj)
    rows[2] = float("nan")
    assert torch.isfinite(engine(plan, rows).aggregate).all()


def test_nonfinite_aggregate_is_never_applied() -> None:
    """Finite rows whose mean overflows (3e38 + 3e38 in float32): the step is skipped."""
    engine = FaultTolerantStep(4, 1)
    rows = torch.zeros(4, 3)
    rows[:2] = 3e38
    out = engine(RedundancySchedule(4, 0).plan(0), rows)
    assert torch.equal(out.aggregate, torch.zeros(3)) and engine.nonfinite_steps == 1


def test_pairs_with_nonfinite_or_overflowing_values_are_not_learned() -> None:
    """One NaN pair used to make the statistics, the fit and the safeguard's score NaN for good
    (the model was never used again); a |y| = 1e30 pair overflowed y² in float32 likewise."""
    x, m = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.zeros(4)
    bank = CorrectionBank(4)
    for t in range(3):
        assert bank.learn(t, [(0, -x, m, x)]) == [0]
    model = bank.models[0]
    stats, score = model.stats.clone(), bank.score[0]
    for t, bad in enumerate([float("nan"), float("inf"), 1e30], start=3):
        assert bank.learn(t, [(0, torch.full((4,), bad), m, x), (0, -x, m, x)]) == [1]
        assert model.num_pairs == t + 1
    assert torch.isfinite(model.stats).all() and bank.trusted(0)
    assert all(math.isfinite(v) for v in bank.score[0]) and bank.score[0][0] <= score[0] + 1e-9
    assert not model.update(torch.full((4,), 1e30), m, x)
    assert torch.isfinite(model.fit()).all()
    assert torch.allclose(bank.predict(0, -x, m), x, atol=1e-5)  # still the sign flip's inverse
    assert torch.equal(bank.predict(0, torch.full((4,), float("nan")), m), m)
    assert stats.shape == model.stats.shape


def test_check_step_leaves_out_a_suspects_replica_of_a_convicted_owners_batch() -> None:
    """w = 6, f̂ = 2, worker 0 convicted, worker 1 noisy but not yet convicted; a check step with
    s = 1: worker 1 recomputes batch 0 (convicted owner) and is compared with honest worker 2 on
    its own batch. Worker 1 disagrees with both, so it is a suspect as of this step; its replica
    of batch 0 used to be taken (``replica``) and put its noise into the aggregate."""
    w = 6
    sched = RedundancySchedule(w, 1, seed=0)
    t = next(t for t in range(10) if sched.shift(t) == 1)
    plan = sched.plan(t)  # worker i computes batches i and i - 1
    truth = torch.randn(w, 8, generator=torch.Generator().manual_seed(0))
    rows = truth[[a.batch for a in plan.assignments]].clone()
    for k, a in enumerate(plan.assignments):
        if a.worker in (0, 1):
            rows[k] += 10.0 * (k + 1)
    engine = FaultTolerantStep(w, 2)
    engine.detector.convicted[0] = 0
    out = engine(plan, rows)
    assert not out.new_convicted  # worker 1: one open accusation (2), threshold f̂ − |C| + 1 = 2
    assert out.sources[:2] == ["suspect", "vouched"]  # batch 1: worker 2's replica
    assert torch.allclose(out.aggregate, truth[1:].mean(0))


def test_bound_correction_hand_checked() -> None:
    from shieldwall.fault_tolerance.correction import bound_correction

    m = torch.tensor([1.0, 1.0])
    pred = torch.tensor([3.0, 4.0])  # norm 5
    assert bound_correction(pred, m, 5.0) == (pred, "model")
    row, how = bound_correction(pred, m, 2.5)
    assert how == "clipped" and torch.allclose(row, torch.tensor([1.5, 2.0]))
    for bad in (float("nan"), float("inf")):
        row, how = bound_correction(torch.tensor([bad, 0.0]), m, 2.5)
        assert how == "context" and torch.equal(row, m)


@pytest.mark.parametrize("defense", ["mean", "median"])
def test_engine_state_round_trip_continues_exactly(defense: str) -> None:
    """Run 12 steps; separately run 6, save the state (torch.save, weights_only load) into a
    fresh engine and run the last 6: the same aggregates bit for bit, convictions, models."""
    import io

    w, sched = 6, RedundancySchedule(6, 2, seed=0)
    inj = FaultInjector("sign_flip", [2], w)
    truths = torch.randn(12, w, 16, generator=torch.Generator().manual_seed(0))
    steps = [(sched.plan(t), _rows(sched.plan(t), truths[t], inj)) for t in range(12)]
    whole = FaultTolerantStep(w, 1, correct=True, defense=defense)
    expect = [whole(plan, rows).aggregate for plan, rows in steps]
    first = FaultTolerantStep(w, 1, correct=True, defense=defense)
    for plan, rows in steps[:6]:
        first(plan, rows)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = FaultTolerantStep(w, 1, correct=True, defense=defense)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    got = [resumed(plan, rows).aggregate for plan, rows in steps[6:]]
    assert all(torch.equal(a, b) for a, b in zip(got, expect[6:]))
    assert resumed.convicted == whole.convicted == {2: 0}
    assert resumed.bank.history == whole.bank.history
    assert torch.equal(resumed.bank.models[2].stats, whole.bank.models[2].stats)
    with pytest.raises(ValueError, match="max_faulty"):
        FaultTolerantStep(w, 2).load_state_dict(first.state_dict())


def test_gradients_deterministic_with_dropout_and_batchnorm_refused() -> None:
    from torch import nn

    from shieldwall.fault_tolerance.gradients import SubBatchGradients

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    grads = SubBatchGradients(model, seed=3)
    assert not grads.batched  # dropout: the seeded loop
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    x, y = torch.randn(2, 4, 8), torch.randint(0, 3, (2, 4))
    g, _ = grads(params, x[[0, 1, 0]], y[[0, 1, 0]], step=5, batch_ids=[0, 1, 0])
    assert torch.equal(g[0], g[2]) and not torch.equal(g[0], g[1])  # replicas: same mask
    with pytest.raises(ValueError, match="batch-norm"):
        SubBatchGradients(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))


def test_config_from_yaml_and_overrides(tmp_path) -> None:
    path = tmp_path / "ddp.yaml"
    path.write_text(
        "ddp_args:\n  workers: 8\n  faulty: [1, 2]\n  check-every: 3\n  correct: true\n"
    )
    cfg = load_ddp_config(path, {"workers": None, "lr": 0.5})
    got = (cfg.workers, cfg.faulty, cfg.check_every, cfg.correct, cfg.lr)
    assert got == (8, [1, 2], 3, True, 0.5)
    assert cfg.bound == 2
    path.write_text("ddp_args:\n  workerz: 8\n")
    with pytest.raises(ValueError, match="did you mean 'workers'"):
        load_ddp_config(path)
    with pytest.raises(ValueError, match="multiple of"):
        load_ddp_config(None, {"workers": 3, "global_batch_size": 64})
