"""Mimic cells of the bucketing reproduction with the paper's own sequence of batches.

The paper's honest workers (``NONIIDLTSampler`` of github.com/epfml/byzantine-robust-noniid-
optimizer) walk their label-sorted shards epoch by epoch: step ``t`` of honest worker ``r`` (its
shard's rank) is batch ``t mod 30`` of the permutation of the shard seeded by
``r ** 3 + t // 30`` (30 steps per epoch, batches of 32, the rest of each permutation unused).
That seed leaves out the run's seed, so every run of the paper — each of its seeds, each rule —
sees the same batches in the same order. Ours draws each step's batch afresh from
``(seed, step, client)``. This script reruns mimic cells (target pinned to the paper's choice,
as ``bucketing_mimic_targets.py`` does; everything else as in ``bucketing_grid.py``) with the
honest workers' batches taken in the paper's order, shifted by ``--offset K`` (permutations
seeded by ``r ** 3 + t // 30 + K``; 0: the paper's exact batches). The initial model, the
dropout masks and the Byzantine workers' batches stay ours.

    nice -n 15 python experiments/bucketing_data_order.py --cells cm:none:0:0 cm:none:1:0
    python experiments/bucketing_data_order.py --cells cm:none:0:0 --offset 100000

Every evaluation of every finished cell goes to
``experiments/results/bucketing_mnist_data_order.csv`` (the curves layout plus ``target`` and
``offset``; rows already there whose run directory is absent are kept). Run directories:
``runs/bucketing_data_order/offset<K>/`` (git-ignored); finished cells are skipped.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bucketing_grid as grid  # noqa: E402
import torch  # noqa: E402
from bucketing_grid import write_csv  # noqa: E402
from bucketing_mimic_targets import ALL, parse_cell, pinned_cell  # noqa: E402
from bucketing_report import CURVE_HEADER, cell_curve  # noqa: E402

from shieldwall.algorithms.base import ClientTask  # noqa: E402
from shieldwall.algorithms.ps_sgd import PSSGD  # noqa: E402
from shieldwall.attacks.schedule import byzantine_ids  # noqa: E402
from shieldwall.config import load_config  # noqa: E402
from shieldwall.matrix import run_cells  # noqa: E402

OUT = ROOT / "experiments" / "results" / "bucketing_mnist_data_order.csv"
#: the environment variable that carries ``--offset`` into the spawned cell processes
ENV = "SHIELDWALL_PAPER_BATCH_OFFSET"
STEPS_PER_EPOCH = 30  # exp3.py: MAX_BATCHES_PER_EPOCH
NUM_CLIENTS, NUM_BYZANTINE = 25, 5  # bucketing_mnist.yaml


def paper_batch(rank: int, step: int, num_samples: int, size: int, offset: int) -> torch.Tensor:
    """Positions in honest worker ``rank``'s shard of its batch at ``step``, in the paper's
    order shifted by ``offset``: batch ``step mod 30`` of ``randperm(num_samples)`` seeded by
    ``rank ** 3 + step // 30 + offset``."""
    epoch, b = divmod(step, STEPS_PER_EPOCH)
    gen = torch.Generator().manual_seed(rank ** 3 + epoch + offset)
    perm = torch.randperm(num_samples, generator=gen)
    if (b + 1) * size > num_samples:
        raise ValueError(f"a shard of {num_samples} samples has no batch {b} of {size}")
    return perm[b * size:(b + 1) * size]


def install(offset: int) -> None:
    """Make every PS-SGD honest worker of this process take the paper's batches (shifted by
    ``offset``); Byzantine workers keep their own draws."""
    ours = PSSGD.batch_indices

    def batch_indices(self: PSSGD, num_samples: int, size: int, task: ClientTask,
                      gen: torch.Generator) -> torch.Tensor:
        byz = byzantine_ids(NUM_CLIENTS, NUM_BYZANTINE, 0, seed=task.seed, redraw=False)
        if task.client_id in byz:
            return ours(self, num_samples, size, task, gen)
        rank = sorted(set(range(NUM_CLIENTS)) - set(byz)).index(task.client_id)
        return paper_batch(rank, task.round, num_samples, size, offset)

    PSSGD.batch_indices = batch_indices  # type: ignore[method-assign]


if os.environ.get(ENV) is not None:  # a spawned cell process re-imports this module
    install(int(os.environ[ENV]))


def write_results(out: Path, offset: int) -> int:
    """Every finished cell under ``out`` (run with ``offset``) into :data:`OUT`, beside the rows
    already there; the number of (cell, offset) curves in the file."""
    header = [*CURVE_HEADER[:5], "target", "offset", *CURVE_HEADER[5:]]
    curves: dict[tuple, dict[int, float]] = {}
    if OUT.is_file():
        lines = [ln for ln in OUT.read_text().splitlines() if not ln.startswith("#")]
        for row in csv.DictReader(io.StringIO("\n".join(lines))):
            key = (row["attack"], row["aggregator"], int(row["s"]), float(row["beta"]),
                   int(row["seed"]), int(row["target"]), int(row["offset"]))
            curves.setdefault(key, {})[int(row["iterations"])] = float(row["accuracy"])
    for agg, s, seed, beta in ALL:
        run = out / "cells" / pinned_cell(agg, s, seed, beta).name
        if (run / "summary.json").is_file():
            cell = pinned_cell(agg, s, seed, beta)
            target = int(cell.attack.split("target=")[1].split(",")[0])
            curves[("mimic", agg, s, beta, seed, target, offset)] = cell_curve(run)[0]
    rows = ([*key, step, f"{curves[key][step]:.2f}"]
            for key in sorted(curves, key=lambda k: (k[6], -k[3], k[1], k[2], k[4]))
            for step in sorted(curves[key]))
    write_csv(OUT, header, rows, comment="Mimic (target pinned to the paper's) with the honest "
              "workers' batches in the paper's order, permutations seeded by rank**3 + epoch + "
              "offset (experiments/bucketing_data_order.py): test top-1 (%) every 30 steps")
    return len(curves)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", type=parse_cell, metavar="AGG:S:SEED[:BETA]",
                    required=True, help="which cells, as in bucketing_mimic_targets.py")
    ap.add_argument("--offset", type=int, default=0,
                    help="added to the seed of each permutation (default 0: the paper's)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel cell processes (default 1)")
    ap.add_argument("--out", default=None,
                    help="run directories (default runs/bucketing_data_order/offset<K>)")
    args = ap.parse_args()
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.offset < 0:
        ap.error(f"--offset must be >= 0, got {args.offset}")
    out = Path(args.out or ROOT / "runs" / "bucketing_data_order" / f"offset{args.offset}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ[ENV] = str(args.offset)  # the cell processes are spawned: they read it
    base = load_config(str(grid.BASE), [])
    run_cells(base, [pinned_cell(*c) for c in args.cells], out, jobs=args.jobs)
    print(f"{write_results(out, args.offset)} curves in {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
