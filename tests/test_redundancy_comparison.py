"""ByzShield's claim, cheaply: with the same global batch, K = 15, r = 3 and q = 3 worst-case
adversaries sending ALIE, MOLS + coordinate median ends above the baseline median and above DETOX
under ByzShield's attack on DETOX (MNIST, MLP, 100 steps; five runs, about two minutes on 2
cores)."""

from __future__ import annotations

from statistics import fmean

from shieldwall.config import config_from_dict
from shieldwall.train import train


def _accuracy(tmp_path, data_dir, approach: str, seed: int = 0) -> float:
    raw = {
        "common_args": {"random_seed": seed},
        "data_args": {"dataset": "mnist", "data_cache_dir": str(data_dir)},
        "model_args": {"model": "mlp"},
        "train_args": {"federated_optimizer": "PS-SGD", "client_num_in_total": 15,
                       "comm_round": 100, "learning_rate": 0.1, "batch_size": 8,
                       "checkpoint_frequency": 0},
        "validation_args": {"frequency_of_the_test": 100},
        "device_args": {"num_threads": 1},
        "tracking_args": {"log_file_dir": str(tmp_path), "run_name": f"{approach}-{seed}",
                          "enable_tensorboard": False},
        "redundancy_args": {"enable": True, "approach": approach, "group_size": 3,
                            "worker_fail": 3, "mode": "coord-median", "lis_simulation": True,
                            "attack_params": {"z": 1.0}},
    }
    return train(config_from_dict(raw))["final_test_accuracy"]


def test_mols_beats_baseline_and_detox_under_worst_case_alie(tmp_path, shared_datasets):
    # Measured at seeds 0-3: MOLS 0.763 0.765 0.789 0.826, baseline 0.792 0.595 0.442 0.724,
    # DETOX 0.579 0.627 0.536 0.587. The baseline median under ALIE swings with the batches it
    # draws (seed 0 is its best), so MOLS and the baseline are compared on two seeds' mean.
    mols = fmean(_accuracy(tmp_path, shared_datasets, "mols", seed) for seed in (0, 1))
    baseline = fmean(_accuracy(tmp_path, shared_datasets, "baseline", seed) for seed in (0, 1))
    detox = _accuracy(tmp_path, shared_datasets, "draco_lite_attack")
    assert mols > baseline + 0.03
    assert mols > detox + 0.1
