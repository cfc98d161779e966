"""Mimic with the paper's targets: cells of the bucketing reproduction with the target pinned.

Mimic copies one honest worker, chosen on the first step from a random start z₀ (the paper's
``MimicVariantAttacker`` with warm-up 1, our ``mimic(warmup=1,knowledge=honest)``). The paper
drew z₀ on its GPU; its logs name the worker it chose (``mmc_count`` in each run's ``stats``):
honest ranks 14, 17 and 1 for seeds 0, 1 and 2, in every rule's run. Ours draws z₀ on the CPU
and picks other workers, and Krum — which keeps selecting the copies — learns whatever that
worker's shard holds (the paper's β = 0 runs copied the same three workers). This script
reruns mimic cells (β = 0.9 unless a cell says ``:0``; by default Krum's, s ∈ {2, none}, seeds
0–2) with the target pinned to the paper's choice
(``mimic(target=K,knowledge=honest)``; everything else as in ``bucketing_grid.py``, same
seeds) and writes every evaluation of every finished one to
``experiments/results/bucketing_mnist_mimic_targets.csv`` (the curves layout plus ``target``;
cells already in the file and without a run directory here are kept).

    nice -n 15 python experiments/bucketing_mimic_targets.py --jobs 2       # run / resume
    python experiments/bucketing_mimic_targets.py --cells rfa:none:0 cm:none:1:0   # AGG:S:SEED[:β]

The run directories live under ``runs/bucketing_mimic_targets/`` (git-ignored); finished cells
are skipped, as in the grid.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bucketing_grid as grid  # noqa: E402
from bucketing_grid import write_csv  # noqa: E402
from bucketing_report import CURVE_HEADER, cell_curve, read_curves  # noqa: E402

from shieldwall.config import load_config  # noqa: E402
from shieldwall.matrix import Cell, run_cells  # noqa: E402

#: the honest worker the paper's mimic copied at each seed (its exp3 logs, ``mmc_count``)
PAPER_TARGETS = {0: 14, 1: 17, 2: 1}
BETAS = (0.9, 0.0)
OUT = ROOT / "experiments" / "results" / "bucketing_mnist_mimic_targets.csv"


RULES = ("krum", "rfa", "cm", "cp", "tm")


def pinned_cell(agg: str, s: int, seed: int, beta: float = 0.9, target: int | None = None) -> Cell:
    """The grid's mimic cell with the target pinned: to ``target``, or by default to the
    worker the paper's logs copied at ``seed``."""
    target = PAPER_TARGETS[seed] if target is None else target
    attack = f"mimic(target={target},knowledge=honest)"
    return Cell(attack, grid.defense(agg, s, beta), seed, ((grid.MOMENTUM, beta),))


def parse_cell(text: str) -> tuple[str, int, int, float]:
    """``AGG:S:SEED[:BETA]`` (``krum:none:1``, ``cm:none:1:0``) → ``("krum", 0, 1, 0.9)``."""
    parts = text.split(":")
    if len(parts) == 3:
        parts.append("0.9")
    agg, s, seed, beta = parts if len(parts) == 4 else [""] * 4
    try:
        cell = (agg, 0 if s == "none" else int(s), int(seed), float(beta))
    except ValueError:
        cell = ("", -1, -1, -1.0)
    if (cell[0] not in RULES or cell[1] not in grid.BUCKETS or cell[2] not in PAPER_TARGETS
            or cell[3] not in BETAS):
        raise argparse.ArgumentTypeError(
            f"a cell is AGG:S:SEED[:BETA] with AGG in {', '.join(RULES)}, S in 2, none, SEED in "
            f"0, 1, 2 and BETA in 0.9 (default), 0; got {text!r}")
    return cell


ALL = [(agg, s, seed, beta) for beta in BETAS for agg in RULES for s in grid.BUCKETS
       for seed in PAPER_TARGETS]
DEFAULT = [c for c in ALL if c[0] == "krum" and c[3] == 0.9]


def write_curves(out: Path) -> int:
    """Every finished cell's evaluations under ``out`` into :data:`OUT`, beside the cells
    already there (a checkout without their run directories loses none); the number of cells
    in the file."""
    curves = read_curves(OUT)  # its extra ``target`` column follows from the seed
    for agg, s, seed, beta in ALL:
        run = out / "cells" / pinned_cell(agg, s, seed, beta).name
        if (run / "summary.json").is_file():
            curves[("mimic", agg, s, beta, seed)] = cell_curve(run)[0]
    order = sorted(curves, key=lambda k: (BETAS.index(k[3]), RULES.index(k[1]),
                                          grid.BUCKETS.index(k[2]), k[4]))
    rows = ([*key, PAPER_TARGETS[key[4]], step, f"{curves[key][step]:.2f}"]
            for key in order for step in sorted(curves[key]))
    write_csv(OUT, [*CURVE_HEADER[:5], "target", *CURVE_HEADER[5:]], rows,
              comment="Mimic with the target pinned to the paper's choice "
              "(experiments/bucketing_mimic_targets.py): test top-1 (%) every 30 steps")
    return len(curves)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", type=parse_cell, metavar="AGG:S:SEED[:BETA]",
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
