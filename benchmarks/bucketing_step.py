"""One round of the bucketing reproduction's workload: per-client loop, batched, and the floor.

    python benchmarks/bucketing_step.py [--repeats 5] [--out docs/benchmarks/bucketing_step.txt]

``experiments/reproduce_bucketing.py`` runs PS-SGD with 25 workers, a batch of 32 each, on the
paper's CNN (``bucketing_cnn``, 1.2 M parameters, two dropout layers). Its cells take minutes
each, so this measures where a round's time goes, on one thread and in process CPU time (the
grid keeps both cores busy; CPU time is the single-core work, without waits for a core):

* **loop, dropout**: ``SimulatorRuntime.run_clients`` as the grid runs it (the model has
  dropout, so every client goes through the per-client loop);
* **loop / batched, no dropout**: the same model with both dropout rates set to 0, which the
  batched executor accepts, through each path;
* **one batch**: one forward/backward of the plain model over the round's 800 samples as one batch.

Medians over ``--repeats`` rounds after one warm-up; ratios against that one batch, measured in the
same run. The batched path exists to remove per-client interpreter overhead; for this model a
round is the convolutions' arithmetic, so it has little to remove.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import median_time  # (beside this script)
from torch import nn

import shieldwall.algorithms  # noqa: F401  (imports algorithms before the runtime package)
from shieldwall.algorithms.base import ClientData
from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.config.schema import TrainArgs
from shieldwall.models import build_model
from shieldwall.runtime.base import ClientExecutor, RoundPlan
from shieldwall.runtime.simulator import SimulatorRuntime

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "datasets"
CLIENTS, BATCH, SHARD = 25, 32, 300


def load(root: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    n = CLIENTS * SHARD
    if (root / "mnist").is_dir():
        from shieldwall.data import load_dataset

        ds = load_dataset("mnist", str(root))
        return ds.train_x[:n].contiguous(), ds.train_y[:n].contiguous(), "MNIST"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=gen)
    return x, torch.randint(0, 10, (n,), generator=gen), "random data of MNIST shape"


def round_time(x: torch.Tensor, y: torch.Tensor, batched: str, dropout: bool, reps: int) -> float:
    torch.manual_seed(0)
    model = build_model("bucketing_cnn", (1, 28, 28), 10)
    if not dropout:
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.p = 0.0
    alg = PSSGD(TrainArgs(batch_size=BATCH, learning_rate=0.01), model, torch.device("cpu"))
    shards = {
        c: ClientData(c, x[c * SHARD : (c + 1) * SHARD], y[c * SHARD : (c + 1) * SHARD])
        for c in range(CLIENTS)
    }
    runtime = SimulatorRuntime(ClientExecutor(alg, shards, seed=0), batched=batched)
    params, plan = alg.flat.vector(), RoundPlan(0, tuple(range(CLIENTS)))
    return median_time(lambda: runtime.run_clients(params, plan), reps, clock=time.process_time)


def floor_time(x: torch.Tensor, y: torch.Tensor, reps: int) -> float:
    torch.manual_seed(0)
    model = build_model("bucketing_cnn", (1, 28, 28), 10)
    xb, yb = x[: CLIENTS * BATCH], y[: CLIENTS * BATCH]

    def once() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()

    return median_time(once, reps, clock=time.process_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y, source = load(args.data_root)
    lines = [
        f"bucketing workload, one PS-SGD round: {CLIENTS} clients x batch {BATCH}, "
        f"bucketing_cnn; torch {torch.__version__}, 1 thread, "
        f"{platform.processor() or platform.machine()}, data: {source}; process CPU time, "
        f"median of {args.repeats}; load average at start {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores",
        f"{'path':34s} {'s/round':>8s} {'vs one batch':>13s}",
    ]
    print("\n".join(lines), flush=True)
    floor = floor_time(x, y, args.repeats)
    cases = [
        ("one batch (800 samples)", floor),
        ("loop, dropout (the grid)", round_time(x, y, "off", True, args.repeats)),
        ("loop, no dropout", round_time(x, y, "off", False, args.repeats)),
        ("batched, no dropout", round_time(x, y, "on", False, args.repeats)),
    ]
    for name, t in cases:
        lines.append(f"{name:34s} {t:8.3f} {t / floor:12.2f}x")
        print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
