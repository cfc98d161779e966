"""Seeds beyond the grid's three for cells of the bucketing reproduction, to see a cell's spread.

The grid (``bucketing_grid.py``) runs seeds 0–2, as the paper does. A cell whose outcome swings
with the random draws (CM without bucketing under mimic at β = 0: see "Replaying the paper's
draws" in docs/reproductions.md) needs more of them to tell its distribution from three draws
of it. This script runs grid cells, unchanged, at other seeds, and writes every evaluation of
every finished one to ``experiments/results/bucketing_mnist_extra_seeds.csv`` (the curves
layout; rows already there whose run directory is absent are kept):

    nice -n 15 python experiments/bucketing_extra_seeds.py --cells mimic:cm:none:0 --seeds 3 4

Run directories: ``runs/bucketing_extra_seeds/`` (git-ignored); finished cells are skipped.
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
from shieldwall.matrix import run_cells  # noqa: E402

OUT = ROOT / "experiments" / "results" / "bucketing_mnist_extra_seeds.csv"
BETAS = (0.9, 0.0)


def parse_cell(text: str) -> tuple[str, str, int, float]:
    """``ATTACK:AGG:S:BETA`` (``mimic:cm:none:0``) → ``("mimic", "cm", 0, 0.0)``."""
    parts = text.split(":")
    try:
        atk, agg, s, beta = parts
        cell = (atk, agg, 0 if s == "none" else int(s), float(beta))
    except ValueError:
        cell = ("", "", -1, -1.0)
    if (cell[0] not in grid.ATTACKS or cell[1] not in grid.AGGREGATORS
            or cell[2] not in grid.BUCKETS or cell[3] not in BETAS):
        raise argparse.ArgumentTypeError(
            f"a cell is ATTACK:AGG:S:BETA with ATTACK in {', '.join(grid.ATTACKS)}, AGG in "
            f"{', '.join(grid.AGGREGATORS)}, S in 2, none and BETA in 0.9, 0; got {text!r}")
    return cell


def write_results(out: Path, cells: list[tuple[str, str, int, float]], seeds: list[int]) -> int:
    """Every finished run under ``out`` into :data:`OUT`, beside the rows already there; the
    number of runs in the file."""
    curves = read_curves(OUT)
    for (atk, agg, s, beta), seed in ((c, k) for c in cells for k in seeds):
        run = out / "cells" / grid.cell(atk, agg, s, beta, seed).name
        if (run / "summary.json").is_file():
            curves[(atk, agg, s, beta, seed)] = cell_curve(run)[0]
    rows = ([*key, step, f"{curves[key][step]:.2f}"] for key in sorted(curves)
            for step in sorted(curves[key]))
    write_csv(OUT, CURVE_HEADER, rows, comment="Grid cells at seeds beyond 0-2 "
              "(experiments/bucketing_extra_seeds.py): test top-1 (%) every 30 steps")
    return len(curves)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", type=parse_cell, required=True,
                    metavar="ATTACK:AGG:S:BETA", help="grid cells, e.g. mimic:cm:none:0")
    ap.add_argument("--seeds", nargs="+", type=int, required=True, help="e.g. 3 4")
    ap.add_argument("--jobs", type=int, default=1, help="parallel cell processes (default 1)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bucketing_extra_seeds"),
                    help="run directories")
    args = ap.parse_args()
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    if any(k < 0 for k in args.seeds):
        ap.error(f"--seeds must be >= 0, got {args.seeds}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = load_config(str(grid.BASE), [])
    cells = [grid.cell(*c, k) for c in args.cells for k in args.seeds]
    run_cells(base, cells, args.out, jobs=args.jobs)
    print(f"{write_results(Path(args.out), args.cells, args.seeds)} runs in {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
