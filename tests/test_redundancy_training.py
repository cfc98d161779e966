"""PS-SGD with redundancy (shieldwall.redundancy.training): runs, vote, distortion, ordering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from shieldwall.config import ConfigError, config_from_dict
from shieldwall.metrics.logger import read_metrics
from shieldwall.redundancy.analysis import distortion
from shieldwall.redundancy.setup import args_from_byzshield, resolve_setup
from shieldwall.train import train

torch.set_num_threads(1)


def make_cfg(tmp: Path, *, steps: int = 2, k: int = 15, seed: int = 0, lr: float = 0.1,
             name: str | None = None, **red: Any) -> Any:
    return config_from_dict({
        "common_args": {"random_seed": seed},
        "data_args": {"dataset": "digits"},
        "model_args": {"model": "lr"},
        "train_args": {"federated_optimizer": "PS-SGD", "client_num_in_total": k,
                       "comm_round": steps, "learning_rate": lr, "batch_size": 4,
                       "checkpoint_frequency": 1},
        "validation_args": {"frequency_of_the_test": steps},
        "device_args": {"num_threads": 1},
        "tracking_args": {"log_file_dir": str(tmp), "run_name": name,
                          "enable_tensorboard": False, "progress_bar": False},
        "redundancy_args": {"enable": True, **red},
    })


@pytest.mark.parametrize(
    ("approach", "k", "extra"),
    [
        ("baseline", 15, {}),
        ("mols", 15, {}),
        ("rama_one", 15, {}),
        ("rama_two", 9, {"rama_m": 3}),
        ("draco-lite", 15, {}),
        ("draco_lite_attack", 15, {}),
        ("maj_vote", 15, {}),
        ("detox", 15, {"mode": "multi-krum", "aggregator_f": 1}),
    ],
)
def test_tiny_run_per_approach(tmp_path: Path, approach: str, k: int, extra: dict) -> None:
    cfg = make_cfg(tmp_path, k=k, approach=approach, worker_fail=2, err_mode="rev_grad", **extra)
    summary = train(cfg)
    assert set(summary) == {"run_dir", "rounds", "final_test_accuracy", "final_test_loss",
                            "wall_time"}
    run = Path(summary["run_dir"])
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "summary.json"):
        assert (run / name).is_file(), name
    records = read_metrics(run)
    assert [r["round"] for r in records] == [0, 1]
    assert all(len(r["adversaries"]) == 2 and "distorted_files" in r for r in records)
    assert 0.0 <= summary["final_test_accuracy"] <= 1.0


def test_vote_restores_honest_gradient_without_file_majority(tmp_path: Path) -> None:
    # MOLS K=15, r=3: one adversary never holds 2 replicas of a file, c_max(1) = 0
    attacked = train(make_cfg(tmp_path, steps=3, name="a", approach="mols", worker_fail=1,
                              err_mode="rev_grad"))
    clean = train(make_cfg(tmp_path, steps=3, name="c", approach="mols", worker_fail=0,
                           aggregator_f=0))
    assert all(r["distorted_files"] == 0 for r in read_metrics(attacked["run_dir"]))
    p_att = torch.load(Path(attacked["run_dir"]) / "final_params.pt")
    p_clean = torch.load(Path(clean["run_dir"]) / "final_params.pt")
    assert torch.equal(p_att, p_clean)


@pytest.mark.parametrize(
    ("approach", "q"), [("mols", 3), ("mols", 5), ("rama_one", 4), ("baseline", 3),
                        ("draco_lite_attack", 3), ("draco_lite_attack", 5)]
)
def test_distorted_files_equal_cmax_under_worst_case(tmp_path: Path, approach: str,
                                                     q: int) -> None:
    cfg = make_cfg(tmp_path, approach=approach, worker_fail=q, err_mode="constant",
                   adversary_choice="worst_case")
    setup = resolve_setup(cfg.redundancy_args, 15)
    if approach != "draco_lite_attack":
        assert setup.c_max == distortion(setup.placement, q).c_max
    else:  # ByzShield's attack on DETOX: ⌊q/r′⌋ whole groups
        assert setup.c_max == q // 2
    records = read_metrics(train(cfg)["run_dir"])
    assert [r["distorted_files"] for r in records] == [setup.c_max] * len(records)
    assert all(r["adversaries"] == setup.worst_case for r in records)


def test_random_adversaries_change_per_step(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, steps=4, approach="mols", worker_fail=3, adversary_choice="random")
    records = read_metrics(train(cfg)["run_dir"])
    assert len({tuple(r["adversaries"]) for r in records}) > 1


def test_resume_matches_uninterrupted(tmp_path: Path) -> None:
    full = train(make_cfg(tmp_path, steps=4, name="full", approach="mols", worker_fail=3))
    part = make_cfg(tmp_path, steps=2, name="part", approach="mols", worker_fail=3)
    run = train(part)["run_dir"]
    resumed = train(make_cfg(tmp_path, steps=4, name="part", approach="mols", worker_fail=3),
                    resume=run)
    a = torch.load(Path(full["run_dir"]) / "final_params.pt")
    b = torch.load(Path(resumed["run_dir"]) / "final_params.pt")
    assert torch.equal(a, b)
    assert [r["round"] for r in read_metrics(run)] == [0, 1, 2, 3]


def test_byzshield_names_and_errors() -> None:
    args = args_from_byzshield({"approach": "mols", "group-size": 3, "worker-fail": 2,
                                "err-mode": "constant", "lis-simulation": "simulate",
                                "mode": "bulyan", "byzantine-gen": "hard_coded"})
    setup = resolve_setup(args, 15)
    assert (setup.attack, setup.aggregator, setup.q) == ("alie", "bulyan", 2)
    assert setup.adversary_choice == "worst_case"
    args = args_from_byzshield({"approach": "maj_vote", "err-mode": "rev_grad"})
    assert resolve_setup(args, 15).aggregator == "mean"
    with pytest.raises(ConfigError, match="approach"):
        resolve_setup(args_from_byzshield({"approach": "molz"}), 15)
    with pytest.raises(ConfigError, match="data attack"):
        resolve_setup(args_from_byzshield({"err_mode": "label_flip"}), 15)
    with pytest.raises(ConfigError, match="group-size"):
        args_from_byzshield({"group-sise": 3})


def test_cluster_step_survives_files_without_any_replica() -> None:
    # ByzShield's MOLS K=15, r=3, q=6 with the median: f = c_max = 12 and F = 25 = 2f + 1, so a
    # file whose three workers all sent rejected frames (NaN rows) leaves too few files for f=12
    from shieldwall.aggregators import aggregate
    from shieldwall.config.schema import RedundancyArgs
    from shieldwall.redundancy.driver import cluster_step
    from shieldwall.redundancy.training import _vote

    setup = resolve_setup(RedundancyArgs(enable=True, approach="mols", group_size=3,
                                         worker_fail=6), 15)
    p = setup.placement
    assert (p.num_files, setup.f, setup.aggregator) == (25, 12, "median")
    files = torch.randn(p.num_files, 5, generator=torch.Generator().manual_seed(0))
    rows = files[torch.tensor(p.files_of_worker)].clone()  # (K, l, d) honest rows
    rows[p.replica_workers[0]] = float("nan")  # every replica of file 0 rejected or lost
    agg, voted, _, _, missing = cluster_step(
        setup, rows, torch.zeros(5), step=0, seed=0, rtol=1e-5, atol=1e-8,
        attack_at_ps=False, adversaries=[], vote=_vote,
    )
    keep = torch.isfinite(voted).all(dim=1)
    assert missing == int((~keep).sum()) >= 1 and not bool(keep[0])
    assert torch.equal(agg, aggregate("median", voted[keep], 0).vector)  # f changes no median


def test_rama_m_minus_one_is_byzshields_m_equals_r() -> None:
    """ByzShield's ``--rama-m`` defaults to -1 (m = r); written into a YAML as ``rama_m: -1``
    it builds the same placement as leaving it unset, and 0 or -2 are one line."""
    def placement(rama_m):
        cfg = config_from_dict({"redundancy_args": {"approach": "rama_two", "group_size": 3,
                                                    "rama_m": rama_m}})
        return resolve_setup(cfg.redundancy_args, 9).placement.files_of_worker

    assert placement(-1) == placement(None) == placement(3)
    for bad in (0, -2):
        with pytest.raises(ConfigError, match=r"rama_m must be >= 1 \(or -1"):
            placement(bad)
