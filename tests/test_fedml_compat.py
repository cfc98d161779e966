"""FedML's attack and defense vocabulary: each name's pipeline, hand-checked values, key origins."""

from __future__ import annotations

import pytest
import torch

from shieldwall.aggregators import AGGREGATORS
from shieldwall.algorithms.adversary import build_adversary, plan_attack
from shieldwall.algorithms.defense import build_defense, resolve_f
from shieldwall.attacks import AttackContext
from shieldwall.config import ConfigError, config_from_dict
from shieldwall.config.fedml import PerRound
from shieldwall.seeding import torch_generator

CLIENTS = 10


def cfg_with(defense: dict | None = None, attack: dict | None = None, overrides=(), **sections):
    raw: dict = {"train_args": {"client_num_in_total": CLIENTS, "comm_round": 4}}
    if defense is not None:
        raw["defense_args"] = {"enable_defense": True, **defense}
    if attack is not None:
        raw["attack_args"] = {"enable_attack": True, **attack}
    for section, body in sections.items():
        raw.setdefault(section, {}).update(body)
    return config_from_dict(raw, overrides=overrides)


def stage_params(params: dict, n: int = CLIENTS) -> dict:
    return {k: v(n) if isinstance(v, PerRound) else v for k, v in params.items()}


# name, FedML keys, expected (pre-aggregators, aggregator, aggregator params, post, weighted)
VOCABULARY = [
    ("krum", {}, ([], "krum", {}, [], False)),
    ("krum", {"krum_param_m": 3}, ([], "multikrum", {"m": 3}, [], False)),
    ("multikrum", {"krum_param_m": 4}, ([], "multikrum", {"m": 4}, [], False)),
    ("trimmed_mean", {"beta": 0.25}, ([], "trimmed_mean", {"b": 2}, [], False)),
    ("wise_median", {}, ([], "median", {}, [], False)),
    ("geo_median", {"batch_num": 5},
     ([("bucketing", {"s": 2})], "geometric_median", {}, [], False)),
    ("rfa", {}, ([], "geometric_median", {}, [], True)),
    ("slsgd", {"trim_param_b": 2, "alpha": 0.5, "option_type": 2},
     ([], "slsgd", {"trim_param_b": 2, "alpha": 0.5, "option_type": 2}, [], False)),
    ("cclip", {"tau": 2.0, "bucket_size": 2},
     ([("bucketing", {"s": 2})], "centered_clip", {"tau": 2.0}, [], False)),
    ("crfl", {"clip_threshold": 3.0, "sigma": 0.02},
     ([], "mean", {}, [("crfl", {"clip_threshold": 3.0, "sigma": 0.02, "num_rounds": 4,
                                 "server_lr": 1.0})], True)),
    ("foolsgold", {}, ([], "foolsgold", {}, [], False)),
    ("norm_diff_clipping", {"norm_bound": 5.0}, ([("clipping", {"c": 5.0})], "mean", {}, [], True)),
    ("robust_learning_rate", {"robust_threshold": 4},
     ([], "robust_learning_rate", {"robust_threshold": 4.0}, [], True)),
    ("weak_dp", {"stddev": 0.1},
     ([], "mean", {}, [("weak_dp", {"stddev": 0.1, "server_lr": 1.0})], True)),
    ("3sigma", {}, ([("three_sigma", {"score": "foolsgold", "bound_param": 3.0})], "mean", {}, [],
                    True)),
    ("3sigma_foolsgold", {"bucketing_batch_size": 2},
     ([("three_sigma", {"score": "foolsgold", "bound_param": 3.0}), ("bucketing", {"s": 2})],
      "mean", {}, [], True)),
    ("3sigma_geo", {"bound_param": 2.0},
     ([("three_sigma", {"score": "geomedian", "bound_param": 2.0})], "mean", {}, [], True)),
    ("anomaly_detection", {"cosine_similarity_bound": 0.5},
     ([("anomaly_detection", {"cosine_similarity_bound": 0.5, "bound_param": 3.0})], "mean", {},
      [], True)),
    ("None", {}, ([], "mean", {}, [], True)),
]


@pytest.mark.parametrize("name,keys,expected", VOCABULARY, ids=[f"{v[0]}-{i}" for i, v in
                                                                enumerate(VOCABULARY)])
def test_each_fedml_defense_builds_its_pipeline(name, keys, expected):
    cfg = cfg_with({"defense_type": name, **keys},
                   {"attack_type": "byzantine", "attack_mode": "random", "byzantine_client_num": 2})
    defense = build_defense(cfg)
    pre, aggregator, params, post, weighted = expected
    assert [(n, stage_params(p)) for n, p in defense.preaggregators] == pre
    assert defense.aggregator == aggregator
    assert stage_params(defense.params) == params
    assert defense.postaggregators == post
    assert defense.weighted is weighted
    defense.check_tolerates(CLIENTS, resolve_f(cfg).value)
    x = torch.randn(CLIENTS, 6)
    out = defense(x, 2, torch.full((CLIENTS,), 5.0), client_ids=list(range(CLIENTS)),
                  reference=torch.zeros(6))
    assert out.vector.shape == (6,) and torch.isfinite(out.vector).all()


def test_parameter_origins_follow_fedml_flat_namespace():
    # Krum's f and the trimmed mean's beta sit under attack_args; --set wins over the file.
    cfg = cfg_with({"defense_type": "trimmed_mean"},
                   {"attack_type": "byzantine", "attack_mode": "zero", "byzantine_client_num": 1,
                    "beta": 0.1}, overrides=["attack_args.byzantine_client_num=2"])
    f = resolve_f(cfg)
    assert (f.value, f.source) == (2, "attack_args.byzantine_client_num (--set)")
    defense = build_defense(cfg)
    assert stage_params(defense.params) == {"b": 1}
    assert defense.sources == {"agg:trimmed_mean.b": "attack_args.beta (file)"}
    crfl = build_defense(cfg_with({"defense_type": "crfl"}, data_args={"dataset": "mnist"}))
    sources = crfl.sources
    assert sources["post0:crfl.threshold_schedule"] == "data_args.dataset (file)"
    assert sources["post0:crfl.num_rounds"] == "train_args.comm_round (file)"
    assert sources["post0:crfl.server_lr"] == "train_args.server_lr (default)"


def test_trimmed_mean_beta_is_a_fraction_of_the_rows_at_aggregation_time():
    defense = build_defense(cfg_with({"defense_type": "trimmed_mean", "beta": 0.2}))
    rows = torch.tensor([[-100.0], [1.0], [2.0], [3.0], [100.0]])  # b = floor(0.2 * 5) = 1
    assert defense(rows, 0).vector.tolist() == [2.0]
    with pytest.raises(ConfigError, match=r"beta must be a fraction in \[0, 0.5\), got 0.5"):
        build_defense(cfg_with({"defense_type": "trimmed_mean", "beta": 0.5}))


def test_left_over_keys_fedml_ones_ignored_others_named():
    defense = build_defense(cfg_with({"defense_type": "krum", "tau": 3.0}))
    assert any("tau" in note for note in defense.notes)
    with pytest.raises(ConfigError, match=r"unknown key defense_args.trim_parm_b .*did you mean "
                                          r"defense_args.trim_param_b"):
        build_defense(cfg_with({"defense_type": "slsgd", "trim_parm_b": 1}))
    cclip = build_defense(cfg_with({"defense_type": "cclip"}))  # FedML's default radius
    assert any("default radius 10" in note for note in cclip.notes)


def test_composition_with_shieldwall_names():
    cfg = cfg_with({"defense_type": "median", "preaggregators": [{"norm_diff_clipping": {}}]})
    with pytest.raises(ConfigError):  # norm_diff_clipping is a defense, clipping the step
        build_defense(cfg)
    cfg = cfg_with({"defense_type": "median", "preaggregators": [{"clipping": {"c": 1.0}}],
                    "postaggregators": [{"weak_dp": {"stddev": 0.0}}]})
    defense = build_defense(cfg)
    assert defense.label == "clipping+median+weak_dp"
    rows = torch.tensor([[3.0, 4.0], [0.0, 0.5], [0.0, 0.1]])
    assert defense(rows, 1).vector.tolist() == pytest.approx([0.0, 0.5])


# --- attacks -------------------------------------------------------------------------------


def byz_cfg(mode: str, **extra):
    return cfg_with(attack={"attack_type": "byzantine", "attack_mode": mode,
                            "byzantine_client_num": 2, **extra})


def run_attack(adversary, updates, reference, round=0):
    ids = tuple(range(updates.shape[0]))
    rows = updates.clone()
    pos = adversary.corrupt_updates(rows, ids, [True] * len(ids), round, 2, reference, None)
    return rows, pos


def test_flip_is_twice_global_minus_local():
    adversary = build_adversary(byz_cfg("flip"), 10)
    g = torch.tensor([1.0, -2.0, 0.5])
    local = torch.randn(CLIENTS, 3) + g
    rows, pos = run_attack(adversary, local - g, g)
    assert sorted(pos) == sorted(adversary.byzantine_ids(0)) and len(pos) == 2
    for i in pos:  # the Byzantine weights are 2·global − local, exactly
        assert torch.allclose(g + rows[i], 2 * g - local[i])
    honest = [i for i in range(CLIENTS) if i not in pos]
    assert torch.equal(rows[honest], (local - g)[honest])


def test_random_weights_lie_in_minus_one_one_and_are_seeded():
    adversary = build_adversary(byz_cfg("random"), 10)
    g = torch.full((500,), 3.0)
    rows, pos = run_attack(adversary, torch.zeros(CLIENTS, 500), g)
    weights = g + rows[pos]
    assert weights.min() >= -1.0 and weights.max() < 1.0
    assert weights.min() < -0.9 and weights.max() > 0.9 and abs(float(weights.mean())) < 0.1
    again, _ = run_attack(adversary, torch.zeros(CLIENTS, 500), g)
    assert torch.equal(rows, again)
    other_round, _ = run_attack(adversary, torch.zeros(CLIENTS, 500), g, round=1)
    assert not torch.equal(rows, other_round)


def test_label_flipping_keys_map_to_label_flip_and_schedule():
    cfg = cfg_with(attack={"attack_type": "label_flipping", "ratio_of_poisoned_client": 0.25,
                           "original_class_list": [1, 2, 7], "target_class_list": [2, 1, 0],
                           "poison_start_round_id": 1, "poison_end_round_id": 2})
    adversary = build_adversary(cfg, 10)
    assert adversary.name == "label_flip" and adversary.num_byzantine == 3  # round(2.5) = 3
    assert [adversary.active(r) for r in range(4)] == [False, True, True, False]
    x, y = torch.zeros(6, 2), torch.tensor([0, 1, 2, 7, 7, 9])
    _, flipped = adversary.data_attack()(x, y, torch.Generator())
    assert flipped.tolist() == [0, 2, 1, 0, 0, 9]  # simultaneous: 1 and 2 swap
    assert resolve_f(cfg).value == 3
    byz = adversary.byzantine_ids(1)
    assert adversary.poisoned(1, tuple(range(CLIENTS))) == byz
    assert adversary.poisoned(0, tuple(range(CLIENTS))) == frozenset()


def test_model_replacement_scales_by_participants_over_server_lr():
    cfg = cfg_with(attack={"attack_type": "model_replacement", "malicious_client_id": 3,
                           "attack_training_rounds": [2, 4]}, train_args={"server_lr": 0.5})
    adversary = build_adversary(cfg, 10)
    assert adversary.byzantine_ids(0) == frozenset({3})
    assert [adversary.active(r) for r in range(4)] == [False, True, False, True]
    updates = torch.arange(20, dtype=torch.float32).reshape(CLIENTS, 2)
    rows, pos = run_attack(adversary, updates, torch.zeros(2), round=1)
    assert pos == [3]
    assert rows[3].tolist() == [6.0 * 20, 7.0 * 20]  # γ = n / η = 10 / 0.5
    assert torch.equal(rows[:3], updates[:3]) and torch.equal(rows[4:], updates[4:])


def test_model_replacement_train_and_scale_bounds_the_norm():
    from shieldwall.attacks.fedml_model_replacement import model_replacement

    out = model_replacement(torch.tensor([[3.0, 4.0]]), 1, AttackContext(n=5, f=1),
                            scale_factor_S=2.0)
    assert out[0].tolist() == pytest.approx([1.2, 1.6])
    cfg = cfg_with(attack={"attack_type": "model_replacement", "scale_factor_S": 2.0})
    plan = plan_attack(cfg)
    assert plan.redraw and plan.fixed_ids is None and plan.params["scale_factor_S"] == 2.0


def test_observing_attacks_are_refused_at_run_time():
    with pytest.raises(ConfigError, match="'dlg' .* only observes updates"):
        build_adversary(cfg_with(attack={"attack_type": "dlg"}), 10)


def test_attack_prob_is_a_seeded_draw_per_round():
    adversary = build_adversary(byz_cfg("zero", attack_prob=0.3), 10)
    active = [adversary.active(r) for r in range(400)]
    assert active == [adversary.active(r) for r in range(400)]
    assert 0.2 < sum(active) / 400 < 0.4


# --- defenses: hand-checked values -----------------------------------------------------------


def test_norm_diff_clipping_then_sample_weighted_mean():
    defense = build_defense(cfg_with({"defense_type": "norm_diff_clipping", "norm_bound": 1.0}))
    rows = torch.tensor([[3.0, 4.0], [0.3, 0.4]])  # → [0.6, 0.8] and unchanged
    out = defense(rows, 0, torch.tensor([1.0, 3.0])).vector
    assert out.tolist() == pytest.approx([(0.6 + 0.9) / 4, (0.8 + 1.2) / 4])


def test_slsgd_mixes_trimmed_mean_with_previous_global_model():
    keys = {"defense_type": "slsgd", "trim_param_b": 1, "alpha": 0.25, "option_type": 2}
    defense = build_defense(cfg_with(keys))
    x_prev = torch.tensor([10.0, -4.0])
    local = torch.tensor([[11.0, -4.0], [12.0, -3.0], [13.0, -2.0], [500.0, 90.0]])
    update = defense(local - x_prev, 0).vector
    # x_t = (1 − α) x_{t−1} + α · Trmean_1(local): trimmed means 12.5 and −2.5
    expected = 0.75 * x_prev + 0.25 * torch.tensor([12.5, -2.5])
    assert (x_prev + update).tolist() == pytest.approx(expected.tolist())
    option1 = build_defense(cfg_with({**keys, "option_type": 1}))
    assert option1(local - x_prev, 0).vector.tolist() == pytest.approx(
        (0.25 * (local - x_prev).mean(0)).tolist())


def test_crfl_clips_the_model_and_adds_seeded_noise_except_in_the_last_round():
    cfg = cfg_with({"defense_type": "crfl", "clip_threshold": 2.5, "sigma": 0.1},
                   common_args={"random_seed": 7})
    defense = build_defense(cfg)
    ref, agg = torch.zeros(2), torch.tensor([[3.0, 4.0]])  # model norm 5 → clipped to 2.5
    noisy = defense(agg, 0, torch.ones(1), round=1, reference=ref).vector
    noise = 0.1 * torch.randn(2, generator=torch_generator(7, "defense", 1, 0))
    assert noisy.tolist() == pytest.approx((torch.tensor([1.5, 2.0]) + noise).tolist())
    last = defense(agg, 0, torch.ones(1), round=3, reference=ref).vector  # comm_round 4
    assert last.tolist() == pytest.approx([1.5, 2.0])
    # MNIST's growing threshold 0.1·(t+1) + 2, capped by clip_threshold; reference and server_lr.
    mnist = build_defense(cfg_with({"defense_type": "crfl", "sigma": 0.0},
                                   data_args={"dataset": "mnist"},
                                   train_args={"server_lr": 0.5}))
    ref = torch.tensor([0.0, 1.0])
    out = mnist(torch.tensor([[6.0, 6.0]]), 0, round=0, reference=ref).vector
    model = ref + 0.5 * torch.tensor([6.0, 6.0])  # [3, 4], norm 5 → 2.1
    assert (ref + 0.5 * out).tolist() == pytest.approx((model * 2.1 / 5).tolist())


def test_weak_dp_noise_on_the_model_has_the_configured_std():
    cfg = cfg_with({"defense_type": "weak_dp", "stddev": 0.5}, train_args={"server_lr": 2.0})
    defense = build_defense(cfg)
    out = defense(torch.zeros(2, 3), 0, torch.ones(2), round=5).vector
    expected = 0.5 * torch.randn(3, generator=torch_generator(0, "defense", 5, 0)) / 2.0
    assert out.tolist() == pytest.approx(expected.tolist())


def test_robust_learning_rate_reverses_disputed_coordinates():
    defense = build_defense(cfg_with({"defense_type": "robust_learning_rate",
                                      "robust_threshold": 3}))
    rows = torch.tensor([[1.0, 1.0], [1.0, -1.0], [2.0, 3.0]])
    out = defense(rows, 0, torch.tensor([1.0, 1.0, 2.0])).vector
    # weighted means 6/4 and 6/4; signs agree 3 times on x, |1 − 1 + 1| = 1 < 3 times on y
    assert out.tolist() == pytest.approx([1.5, -1.5])


def colluding_rounds(num_rounds: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """7 honest clients with unrelated directions, 3 sybils pushing one direction."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(40, generator=gen)
    out = []
    for _ in range(num_rounds):
        honest = torch.randn(7, 40, generator=gen)
        sybils = target + 0.05 * torch.randn(3, 40, generator=gen)
        out.append(torch.cat([honest, sybils]))
    return out


def test_foolsgold_gives_a_colluding_group_no_weight():
    from shieldwall.aggregators.fedml_foolsgold import foolsgold_weights

    rounds = colluding_rounds()
    alpha = foolsgold_weights(rounds[0])
    assert alpha[7:].max() == 0.0 and alpha[:7].min() > 0.5
    defense = build_defense(cfg_with({"defense_type": "foolsgold"}))
    ids = list(range(CLIENTS))
    for rows in rounds:
        out = defense(rows, 3, client_ids=ids).vector
    history = sum(rounds)
    weights = foolsgold_weights(history)
    assert torch.allclose(out, weights @ rounds[-1] / CLIENTS)
    assert weights[7:].max() == 0.0


@pytest.mark.parametrize("name", ["3sigma", "3sigma_foolsgold"])
def test_three_sigma_drops_a_colluding_group(name):
    defense = build_defense(cfg_with({"defense_type": name}))
    for r, rows in enumerate(colluding_rounds()):
        out = defense(rows, 3, torch.ones(CLIENTS), client_ids=list(range(CLIENTS)), round=r)
        assert out.selected.tolist() == list(range(7))
        assert torch.allclose(out.vector, rows[:7].mean(0))


def test_three_sigma_geo_drops_far_rows_and_never_half():
    defense = build_defense(cfg_with({"defense_type": "3sigma_geo"}))
    rows = torch.randn(CLIENTS, 5, generator=torch.Generator().manual_seed(1))
    rows[[2, 5]] += 50.0
    assert build_defense(cfg_with({"defense_type": "3sigma_geo"}))(rows, 2).selected.tolist() == \
        [0, 1, 3, 4, 6, 7, 8, 9]
    rows[:5] += 80.0  # half the rows far away: a 50/50 split is not an outlier group
    kept = defense(rows, 2).selected
    assert kept is None or len(kept) > 5


def test_anomaly_detection_triggers_on_a_turn_and_keeps_per_client_memory():
    defense = build_defense(cfg_with({"defense_type": "anomaly_detection",
                                      "cosine_similarity_bound": 0.3}))
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(CLIENTS, 8, generator=gen)
    ids = list(range(CLIENTS))
    first = defense(base, 1, client_ids=ids)
    assert first.selected is None  # round 1: nothing to compare with
    steady = base + 0.01 * torch.randn(CLIENTS, 8, generator=gen)
    assert defense(steady, 1, client_ids=ids).selected is None
    turned = steady.clone()
    turned[4] = -40.0 * steady[4]  # reverses direction and grows: suspicious and an outlier
    out = defense(turned, 1, client_ids=ids)
    assert out.selected.tolist() == [i for i in ids if i != 4]


def test_defense_state_round_trips_and_probing_calls_change_nothing():
    rounds = colluding_rounds(4)
    ids = list(range(CLIENTS))
    for name, keys in [("foolsgold", {}), ("anomaly_detection", {}),
                       ("cclip", {"tau": 0.5, "bucket_size": 1}), ("3sigma", {})]:
        cfg = cfg_with({"defense_type": name, **keys})
        a, b = build_defense(cfg), build_defense(cfg)
        for r, rows in enumerate(rounds[:2]):
            a(rows, 3, client_ids=ids, round=r)
        b.load_state_dict(a.state_dict())
        a.as_function()(rounds[2] * 3, 3)  # probing (adaptive attacks) must not move the state
        a.check_tolerates(CLIENTS, 3)
        for r, rows in enumerate(rounds[2:], start=2):
            assert torch.equal(a(rows, 3, client_ids=ids, round=r).vector,
                               b(rows, 3, client_ids=ids, round=r).vector), name


def test_cclip_centres_on_the_previous_aggregate():
    keys = {"defense_type": "cclip", "tau": 0.1, "bucket_size": 1}
    carried, fresh = build_defense(cfg_with(keys)), build_defense(cfg_with(keys))
    near_zero = torch.tensor([[0.0, 0.0], [0.1, 0.0], [-0.1, 0.0], [9.0, 0.0]])
    first = carried(near_zero, 1).vector
    assert torch.equal(carried.state_dict()["previous"], first)
    far = near_zero + torch.tensor([10.0, 0.0])
    # 5 iterations of radius 0.1 from the previous aggregate cannot travel to 10; from the
    # coordinate median (a stateless call's start) the centre is already there.
    assert float(carried(far, 1).vector[0]) <= float(first[0]) + 0.5 + 1e-6
    stateless = AGGREGATORS.get("centered_clip")(far, 1, tau=0.1, iterations=5)
    assert float(stateless[0]) == pytest.approx(10.0, abs=0.1)
    # Before any committed round the centre is zero (the paper's momentum starts at 0).
    assert float(fresh(far, 1).vector[0]) == pytest.approx(0.5, abs=1e-6)
