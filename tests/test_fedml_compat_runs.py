"""FedML-vocabulary configs train end to end (a cheap subset: digits, 2 rounds, 6 clients)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shieldwall.config import config_from_dict
from shieldwall.train import train


def fedml_config(tmp_path: Path, attack: dict, defense: dict) -> dict:
    return {
        # the vocabulary under shieldwall's semantics (FedML's: tests/test_fedml_semantics.py)
        "common_args": {"training_type": "cross_silo", "random_seed": 0,
                        "fedml_semantics": "off"},
        "data_args": {"dataset": "digits", "partition_method": "hetero", "partition_alpha": 0.5},
        "model_args": {"model": "lr"},
        "train_args": {"federated_optimizer": "FedAvg", "client_num_in_total": 6,
                       "client_num_per_round": 6, "comm_round": 2, "epochs": 1,
                       "batch_size": 16, "learning_rate": 0.05},
        "device_args": {"num_threads": 1},
        "comm_args": {"backend": "MPI"},
        "tracking_args": {"log_file_dir": str(tmp_path), "enable_tensorboard": False,
                          "run_name": "run"},
        "attack_args": {"enable_attack": True, **attack},
        "defense_args": {"enable_defense": True, **defense},
    }


CASES = [
    ({"attack_type": "byzantine", "attack_mode": "random", "byzantine_client_num": 1},
     {"defense_type": "krum"}),
    ({"attack_type": "byzantine", "attack_mode": "flip", "byzantine_client_num": 1},
     {"defense_type": "3sigma_geo"}),
    ({"attack_type": "label_flipping", "ratio_of_poisoned_client": 0.34,
      "original_class_list": [0, 1], "target_class_list": [1, 0]},
     {"defense_type": "trimmed_mean", "beta": 0.34}),
    ({"attack_type": "model_replacement", "malicious_client_id": 2, "scale_factor_S": 5.0},
     {"defense_type": "crfl", "clip_threshold": 50.0, "sigma": 0.001}),
]


def test_fedml_beta_too_small_for_f_stops_with_one_line(tmp_path):
    raw = fedml_config(tmp_path, CASES[2][0], {"defense_type": "trimmed_mean", "beta": 0.2})
    with pytest.raises(ValueError, match=r"b >= f.*b from defense_args.beta \(file\)"):
        train(config_from_dict(raw))


@pytest.mark.parametrize("attack,defense", CASES,
                         ids=[f"{a['attack_type']}-{d['defense_type']}" for a, d in CASES])
def test_fedml_vocabulary_runs(tmp_path, attack, defense):
    summary = train(config_from_dict(fedml_config(tmp_path, attack, defense)))
    assert summary["final_test_accuracy"] > 0.3
    records = [json.loads(line) for line in
               (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines() if line]
    assert len(records) == 2
    expected = 2 if attack["attack_type"] == "label_flipping" else 1  # round(0.34 · 6) = 2
    assert all(len(r["byzantine"]) == expected for r in records)
    if attack["attack_type"] == "model_replacement":
        assert all(r["byzantine"] == [2] for r in records)
