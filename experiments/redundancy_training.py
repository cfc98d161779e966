"""Redundancy defenses in PS-SGD: ByzShield MOLS vs baseline vs DETOX under attack.

K = 15 workers, r = 3, q = 3 adversaries; every scheme aggregates its voted files with the
coordinate median; the adversaries are the worst-case set of each placement (for DETOX,
ByzShield's attack on DETOX: r′ = 2 adversaries in one group, c_max = 1 of 5 files; for MOLS
c_max(3) = 3 of 25 files; for the baseline 3 of 15). The global batch is the same for every
scheme (``--batch`` samples, split into F files). Prints the final test accuracy per scheme and
seed, and the mean.

    python experiments/redundancy_training.py --dataset mnist --data-dir /work/shared/datasets \\
        --attack alie --steps 300
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from shieldwall.config import config_from_dict
from shieldwall.metrics.logger import read_metrics
from shieldwall.train import train

SCHEMES = [
    ("baseline median", "baseline", 15),
    ("DETOX median (attack on DETOX)", "draco_lite_attack", 5),
    ("ByzShield MOLS median", "mols", 25),
    ("ByzShield Ramanujan-1 median", "rama_one", 25),
]


def config(approach: str, files: int, args: argparse.Namespace, seed: int, out: str) -> dict:
    attack: dict = {"err_mode": "rev_grad"}
    if args.attack == "alie":
        attack = {"lis_simulation": True, "attack_params": {"z": args.z} if args.z else {}}
    return {
        "common_args": {"random_seed": seed},
        "data_args": {"dataset": args.dataset, "data_cache_dir": args.data_dir},
        "model_args": {"model": args.model},
        "train_args": {
            "federated_optimizer": "PS-SGD", "client_num_in_total": 15,
            "comm_round": args.steps, "learning_rate": args.lr, "momentum": args.momentum,
            "batch_size": args.per_file or args.batch // files, "checkpoint_frequency": 0,
        },
        "validation_args": {"frequency_of_the_test": args.steps},
        "device_args": {"num_threads": 1},
        "tracking_args": {"log_file_dir": out, "enable_tensorboard": False,
                          "progress_bar": False},
        "redundancy_args": {"enable": True, "approach": approach, "group_size": 3,
                            "worker_fail": args.q, "mode": "coord-median", **attack},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="lr")
    parser.add_argument("--attack", choices=("alie", "rev_grad"), default="alie")
    parser.add_argument("--z", type=float, default=None, help="ALIE z (default: the paper's)")
    parser.add_argument("--q", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=300, help="global batch per step")
    parser.add_argument("--per-file", type=int, default=None,
                        help="samples per file, the same for every scheme (overrides --batch)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--schemes", nargs="+", default=[a for _, a, _ in SCHEMES],
                        help="approaches to run (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.dataset}/{args.model}, K=15, r=3, q={args.q}, attack {args.attack}"
          f"{f' z={args.z}' if args.z else ''}, {args.steps} steps, global batch {args.batch}, "
          f"lr {args.lr}, seeds {args.seeds}")
    print(f"{'scheme':34s} {'F':>3s} {'distorted':>9s} "
          + " ".join(f"{'seed ' + str(s):>8s}" for s in args.seeds) + f" {'mean':>7s} {'s':>6s}")
    with tempfile.TemporaryDirectory() as out:
        for label, approach, files in SCHEMES:
            if approach not in args.schemes:
                continue
            accs, distorted, started = [], 0, time.perf_counter()
            for seed in args.seeds:
                cfg = config_from_dict(config(approach, files, args, seed, out))
                summary = train(cfg)
                accs.append(summary["final_test_accuracy"])
                distorted = read_metrics(summary["run_dir"])[-1]["distorted_files"]
            print(f"{label:34s} {files:3d} {distorted:9d} "
                  + " ".join(f"{a:8.4f}" for a in accs)
                  + f" {statistics.mean(accs):7.4f} {time.perf_counter() - started:6.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
