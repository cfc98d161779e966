"""Per-step time and bytes of redundant training: PS + K worker processes vs the in-process
simulator vs plain data-parallel PS-SGD, on the same job.

The job: LeNet on MNIST (or ``--dataset digits --model lr`` without the shared data), K = 15
workers, a global batch of B = 1500 distinct samples per step, coordinate median (vote first
where there is redundancy), no adversaries, SGD with momentum:

* ``data-parallel``: PS-SGD, every worker one batch of B/K = 100 samples (``shieldwall run``
  without redundancy; median over the K rows);
* ``baseline``: the redundancy driver with r = 1 (F = K files of 100): the driver's own cost;
* ``DETOX``: r = 3, F = 5 files of 300, every worker one file (r× the gradient work);
* ``MOLS``: r = 3, F = 25 files of 60, every worker l = 5 files (r× the work, l frames a step).

Each runs ``--steps`` steps on the torch.distributed runtime (16 ranks forked on this machine,
gloo over 127.0.0.1) and in the simulator (one process). Step time: median (and the 10–90 %
range) of ``round_time`` after ``--warm`` steps. Bytes: the PS's payload counters (task headers +
model down, 128-byte-header frames up), read from ``metrics.jsonl`` for the redundancy runs and,
for data-parallel (whose records do not carry them), from the same runtime's formula —
8·(6 + 2·slots) + 4d down and 128 + 4d up per frame. ``4Kd`` is one float32 model per worker.

    nice -n 10 python benchmarks/redundancy_cluster.py --data-dir ../shared/datasets \\
        --out docs/benchmarks/redundancy_cluster.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

K = 15
JOBS = [  # label, redundancy_args (None: plain PS-SGD), per-worker batch / file size
    ("data-parallel", None, 100),
    ("baseline r=1", {"approach": "baseline"}, 100),
    ("DETOX r=3", {"approach": "draco-lite", "group_size": 3}, 300),
    ("MOLS r=3", {"approach": "mols", "group_size": 3}, 60),
]


def raw_config(args: argparse.Namespace, red: dict | None, batch: int, out: Path) -> dict:
    raw = {
        "common_args": {"random_seed": 0},
        "data_args": {"dataset": args.dataset, "data_cache_dir": args.data_dir,
                      "partition_method": "iid"},
        "model_args": {"model": args.model},
        "train_args": {"federated_optimizer": "PS-SGD", "client_num_in_total": K,
                       "comm_round": args.warm + args.steps, "batch_size": batch,
                       "learning_rate": 0.05, "momentum": 0.9, "checkpoint_frequency": 0},
        "validation_args": {"frequency_of_the_test": 10**6},
        "device_args": {"num_threads": 1},
        "comm_args": {"round_timeout": 600},
        "tracking_args": {"log_file_dir": str(out), "enable_tensorboard": False,
                          "progress_bar": False},
        "defense_args": {"enable_defense": True, "defense_type": "median"},
    }
    if red is not None:
        raw["redundancy_args"] = {"enable": True, "mode": "coord-median", "worker_fail": 0,
                                  **red}
        raw.pop("defense_args")
    return raw


def run(raw: dict, name: str, runtime: str, out: Path) -> list[dict]:
    from shieldwall.runtime.spawn import spawn_local

    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    argv = ["run", str(path), "--run-name", name, "--set", f"comm_args.runtime={runtime}"]
    if runtime == "simulator":
        from shieldwall.cli import main

        if main(argv) != 0:
            raise SystemExit(f"{name} failed")
    else:
        ranks = spawn_local(K + 1, argv, log_dir=out / f"{name}.logs", method="forkserver")
        code = ranks[0].wait(3600)
        for r in ranks[1:]:
            r.wait(60)
            r.kill()
        if code != 0:
            raise SystemExit(f"{name} failed:\n{ranks[0].log()[-2000:]}")
    lines = (out / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x]


def summarize(recs: list[dict], warm: int) -> tuple[float, float, float]:
    times = sorted(r["round_time"] * 1000 for r in recs[warm:])
    q = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return statistics.median(times), q[0], q[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from shieldwall.data import load_dataset
    from shieldwall.models import MODELS

    data = load_dataset(args.dataset, args.data_dir)
    d = sum(p.numel() for p in MODELS.get(args.model)(data.input_shape,
                                                       data.num_classes).parameters())
    lines = [
        f"# benchmarks/redundancy_cluster.py --dataset {args.dataset} --model {args.model} "
        f"--steps {args.steps} --warm {args.warm}  ({time.strftime('%Y-%m-%d')})",
        f"# vm: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start, "
        f"torch {torch.__version__}, {platform.python_version()}, 1 thread per process",
        f"# K = {K} workers, B = 1500 distinct samples a step, d = {d}; 4Kd = {4 * K * d} B; "
        "step ms: median (10-90 %)",
        f"{'job':14s} {'runtime':10s} {'ranks':>5s} {'samples/worker':>14s} "
        f"{'step ms':>22s} {'down B/step':>12s} {'up B/step':>12s} {'down/4Kd':>8s} "
        f"{'up/4Kd':>7s}",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for label, red, batch in JOBS:
            load = 5 if red is not None and red["approach"] == "mols" else 1
            for runtime in ("torch_distributed", "simulator"):
                name = f"{label.split()[0]}-{runtime}".replace(" ", "")
                recs = run(raw_config(args, red, batch, out), name, runtime, out)
                med, lo, hi = summarize(recs, args.warm)
                down = up = 0.0
                if runtime != "simulator":
                    if red is None:  # the runtime's formula (see module docstring)
                        down = K * (8 * (6 + 2 * 1) + 4 * d)
                        up = K * (128 + 4 * d)
                    else:
                        last, first = recs[-1], recs[args.warm - 1]
                        steps = len(recs) - args.warm
                        down = (last["bytes_down"] - first["bytes_down"]) / steps
                        up = (last["bytes_up"] - first["bytes_up"]) / steps
                ranks = K + 1 if runtime != "simulator" else 1
                row = (f"{label:14s} {runtime[:10]:10s} {ranks:5d} {batch * load:14d} "
                       f"{f'{med:.0f} ({lo:.0f}-{hi:.0f})':>22s} "
                       f"{down:12.0f} {up:12.0f} {down / (4 * K * d):8.3f} "
                       f"{up / (4 * K * d):7.3f}")
                lines.append(row)
                print(row, flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
