"""Per-step cost of BTARD's open swarm (hivemind) against its closed cluster (torch.distributed).

The same job on each transport: MNIST, softmax regression (d = 7,850), n peers, batch 32, SGD
0.1, τ = 1, one validator per step, Ed25519 signatures, no attack, ``--steps`` steps. Measured
per run: the median wall time of a step over steps 5.. (``round_time`` in the writing peer's
metrics.jsonl; start-up and data loading are not counted), then the median over ``--repeats``
runs.

* ``floor``: the in-process simulator (every peer in one process, messages in memory): the work
  of a step with a free network, all n peers' share on one core;
* ``torch.distributed``: one process per peer (``python -m shieldwall.btard.launch``), gloo
  point-to-point on 127.0.0.1;
* ``swarm``: one ``shieldwall peer`` per peer (``shieldwall swarm``), libp2p through hivemind's
  daemon, membership through the DHT each step.

Ratios: swarm / torch.distributed (the price of an open swarm) and each / floor.

    python benchmarks/btard_swarm.py [--peers 4 8] [--out docs/benchmarks/btard_swarm.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def config(n: int, steps: int, out: Path, data_root: Path) -> dict:
    return {
        "common_args": {"random_seed": 0},
        "data_args": {"dataset": "mnist", "data_cache_dir": str(data_root),
                      "partition_method": "iid"},
        "model_args": {"model": "lr"},
        "device_args": {"num_threads": 1},
        "train_args": {"federated_optimizer": "BTARD", "client_num_in_total": n,
                       "comm_round": steps, "batch_size": 32, "learning_rate": 0.1,
                       "checkpoint_frequency": 0},
        "validation_args": {"frequency_of_the_test": steps},
        "btard_args": {"tau": 1.0, "validators": 1, "signature": "auto"},
        "tracking_args": {"enable_tensorboard": False, "progress_bar": False,
                          "log_file_dir": str(out), "run_name": "run"},
    }


def step_time(metrics: Path) -> float:
    records = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return statistics.median(r["round_time"] for r in records if r["round"] >= 5)


def run_once(transport: str, n: int, steps: int, data_root: Path) -> float:
    tmp = Path(tempfile.mkdtemp(prefix=f"btard_{transport}_"))
    try:
        cfg = tmp / "cfg.yaml"
        cfg.write_text(yaml.safe_dump(config(n, steps, tmp, data_root)))
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        if transport == "floor":
            cmd = [sys.executable, "-m", "shieldwall.cli", "run", str(cfg),
                   "--set", "comm_args.runtime=simulator"]
            metrics = tmp / "run" / "metrics.jsonl"
        elif transport == "torch.distributed":
            cmd = [sys.executable, "-m", "shieldwall.btard.launch", str(cfg), "--peers", str(n)]
            metrics = tmp / "run" / "metrics.jsonl"
        else:
            cmd = [sys.executable, "-m", "shieldwall.cli", "swarm", str(cfg), "--peers", str(n),
                   "--out", str(tmp / "peers"), "--phase-timeout", "30"]
            metrics = tmp / "peers" / "peer-0" / "metrics.jsonl"
        subprocess.run(cmd, cwd=REPO, env=env, check=True, timeout=1800,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return step_time(metrics)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peers", type=int, nargs="+", default=[4, 8])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "btard_swarm.txt")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    lines = [
        "# BTARD per-step time: open swarm (hivemind) vs closed cluster (torch.distributed)",
        f"# python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} "
        f"cores, 1 thread per process, load average {load:.1f} at the start",
        f"# MNIST softmax regression (d = 7,850), batch 32, 1 validator, Ed25519; median step "
        f"time over steps 5..{args.steps - 1}, median of {args.repeats} runs",
        "",
        f"{'peers':>5}  {'transport':<18} {'step (ms)':>10} {'runs (ms)':<24} {'/ floor':>8}"
        f" {'/ torch.dist':>12}",
    ]
    for n in args.peers:
        med: dict[str, float] = {}
        runs: dict[str, list[float]] = {}
        for transport in ("floor", "torch.distributed", "swarm"):
            runs[transport] = [1000 * run_once(transport, n, args.steps, args.data_root)
                               for _ in range(args.repeats)]
            med[transport] = statistics.median(runs[transport])
            print(n, transport, [f"{x:.0f}" for x in runs[transport]], flush=True)
        for transport in ("floor", "torch.distributed", "swarm"):
            lines.append(
                f"{n:>5}  {transport:<18} {med[transport]:>10.1f} "
                f"{' '.join(f'{x:.0f}' for x in runs[transport]):<24} "
                f"{med[transport] / med['floor']:>8.2f} "
                f"{med[transport] / med['torch.distributed']:>12.2f}")
        lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
