"""Reproduce the bucketing paper's non-iid MNIST table (Karimireddy, He & Jaggi, ICLR 2022).

Runs the paper's exp3 grid (:mod:`bucketing_grid`: 286 cells of n = 25 workers, f = 5
Byzantine, on label-sorted MNIST shards; every rule and attack in the paper's variant) with
``shieldwall.matrix`` and writes the side-by-side report (:mod:`bucketing_report`). Each
finished cell is appended to ``experiments/results/bucketing_mnist.csv`` (committed), and the
run directories (checkpoints every ``checkpoint_frequency`` steps) live under
``runs/bucketing_mnist/`` (git-ignored). Rerunning the same command resumes: finished cells
listed in the CSV or with a ``summary.json`` are skipped; an interrupted cell continues from
its checkpoint.

    nice -n 15 python experiments/reproduce_bucketing.py --jobs 2 &      # run / resume the grid
    python experiments/reproduce_bucketing.py --report                   # tables + heatmaps only
    python experiments/reproduce_bucketing.py --list                     # the cells, in order

``--report`` rewrites ``docs/bucketing/bucketing_table.md`` (ours beside the paper's, from
``experiments/results/bucketing_paper_exp3.csv``) and one heatmap per (β, s).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bucketing_grid import (  # noqa: E402
    BASE,
    ROOT,
    ordered_cells,
    read_results,
    write_results,
)
from bucketing_report import report, update_curves  # noqa: E402

from shieldwall.cli import quiet_stdout  # noqa: E402
from shieldwall.config import load_config  # noqa: E402
from shieldwall.config.loader import ConfigError  # noqa: E402
from shieldwall.matrix import Cell, run_cells  # noqa: E402
from shieldwall.rundir import RunDirError  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1, help="parallel cell processes (default 1)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bucketing_mnist"),
                    help="run directories (default: runs/bucketing_mnist)")
    ap.add_argument("--limit", type=int, default=None, help="run at most this many cells")
    ap.add_argument("--report", action="store_true", help="only rewrite the table and heatmaps")
    ap.add_argument("--list", action="store_true", help="print the cells in run order")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="SECTION.KEY=VALUE", help="override a base config value")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cells = ordered_cells()
    done = read_results()
    if args.list:
        try:
            for i, c in enumerate(cells):
                print(i, "done" if c in done else "todo", c.name)
            sys.stdout.flush()
        except BrokenPipeError:  # ``--list | head``
            quiet_stdout()
        return 0
    if args.report:
        print(report(done, Path(args.out)))
        return 0
    todo = [c for c in cells if c not in done]
    if args.limit is not None:
        todo = todo[: args.limit]
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    try:
        base = load_config(str(BASE), args.overrides)
    except ConfigError as exc:
        ap.error(str(exc))

    def on_result(results: dict[Cell, float]) -> None:
        merged = {**done, **{c: v for c, v in results.items() if v is not None}}
        write_results(merged)
        update_curves([c for c, v in results.items() if v is not None], Path(args.out))
        for c in results:  # a finished cell's checkpoint (worker momenta: ~125 MB) is not needed
            (Path(args.out) / "cells" / c.name / "checkpoint.pt").unlink(missing_ok=True)

    try:
        run_cells(base, todo, args.out, jobs=args.jobs, on_result=on_result)
    except RunDirError as exc:  # another grid runs in --out
        print(f"reproduce_bucketing.py: {exc}", file=sys.stderr)
        return 1
    report({**done, **read_results()}, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
