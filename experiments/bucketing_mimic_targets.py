"""Mimic with the paper's targets: cells of the bucketing reproduction with the target pinned.

Mimic copies one honest worker, chosen on the first step from a random start z₀ (the paper's
``MimicVariantAttacker`` with warm-up 1, our ``mimic(warmup=1,knowledge=honest)``). The paper
drew z₀ on its GPU; its logs name the worker it chose (``mmc_count`` in each run's ``stats``):
honest ranks 14, 17 and 1 for seeds 0, 1 and 2, in every rule's run. Ours draws z₀ on the CPU
and picks other workers, and Krum — which keeps selecting the copies — learns whatever that
worker's shard holds. This script reruns mimic cells (β = 0.9; by default Krum's, s ∈ {2,
none}, seeds 0–2) with the target pinned to the paper's choice
(``mimic(target=K,knowledge=honest)``; everything else as in ``bucketing_grid.py``, same
seeds) and writes every evaluation of every finished one to
``experiments/results/bucketing_mnist_mimic_targets.csv`` (the curves layout plus ``target``).

    nice -n 15 python experiments/bucketing_mimic_targets.py --jobs 2       # run / resume
    python experiments/bucketing_mimic_targets.py --cells rfa:none:0 krum:2:1  # AGG:S:SEED

The run directories live under ``runs/bucketing_mimic_targets/`` (git-ignored); finished cells
are skipped, as in the grid.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bucketing_grid as grid  # noqa: E402
from bucketing_report import cell_curve  # noqa: E402

from shieldwall.config import load_config  # noqa: E402
from shieldwall.matrix import Cell, run_cells  # noqa: E402

#: the honest worker the paper's mimic copied at each seed (its exp3 logs, ``mmc_count``)
PAPER_TARGETS = {0: 14, 1: 17, 2: 1}
BETA = 0.9
OUT = ROOT / "experiments" / "results" / "bucketing_mnist_mimic_targets.csv"


RULES = ("krum", "rfa", "cm", "cp", "tm")


def pinned_cell(agg: str, s: int, seed: int) -> Cell:
    attack = f"mimic(target={PAPER_TARGETS[seed]},knowledge=honest)"
    return Cell(attack, grid.defense(agg, s, BETA), seed, ((grid.MOMENTUM, BETA),))


def parse_cell(text: str) -> tuple[str, int, int]:
    """``AGG:S:SEED`` (``krum:none:1``) → ``("krum", 0, 1)``."""
    agg, s, seed = (text.split(":") + ["", "", ""])[:3]
    try:
        cell = (agg, 0 if s == "none" else int(s), int(seed))
    except ValueError:
        cell = ("", -1, -1)
    if cell[0] not in RULES or cell[1] not in grid.BUCKETS or cell[2] not in PAPER_TARGETS:
        raise argparse.ArgumentTypeError(
            f"a cell is AGG:S:SEED with AGG in {', '.join(RULES)}, S in 2, none and SEED in 0, 1, "
            f"2; got {text!r}")
    return cell


ALL = [(agg, s, seed) for agg in RULES for s in grid.BUCKETS for seed in PAPER_TARGETS]
DEFAULT = [c for c in ALL if c[0] == "krum"]


def write_curves(out: Path) -> int:
    """Every finished cell's evaluations to :data:`OUT`; the number of cells written."""
    rows = []
    for agg, s, seed in ALL:
        run = out / "cells" / pinned_cell(agg, s, seed).name
        if not (run / "summary.json").is_file():
            continue
        curve, _ = cell_curve(run)
        rows += [("mimic", agg, s, BETA, seed, PAPER_TARGETS[seed], step, f"{acc:.2f}")
                 for step, acc in sorted(curve.items())]
    with OUT.open("w", newline="") as fh:
        fh.write("# Mimic with the target pinned to the paper's choice "
                 "(experiments/bucketing_mimic_targets.py): test top-1 (%) every 30 steps\n")
        w = csv.writer(fh)
        w.writerow(["attack", "aggregator", "s", "beta", "seed", "target", "iterations",
                    "accuracy"])
        w.writerows(rows)
    return len({(r[1], r[2], r[4]) for r in rows})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", type=parse_cell, metavar="AGG:S:SEED",
                    default=DEFAULT, help="which cells (default: Krum's six)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel cell processes (default 1)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bucketing_mimic_targets"),
                    help="run directories")
    args = ap.parse_args()
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = load_config(str(grid.BASE), [])
    run_cells(base, [pinned_cell(*c) for c in args.cells], args.out, jobs=args.jobs)
    print(f"{write_curves(Path(args.out))} cells in {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
