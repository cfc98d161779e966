"""``shieldwall matrix CONFIG --attacks a,b --defenses x,y [--seeds k]``: the attack × defense grid.

The no-attack row and the no-defense column are always included as references. Writes
``OUT/matrix.csv`` and ``OUT/matrix.png``; rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["register", "matrix_command"]


def _names(text: str) -> list[str]:
    """Split at commas outside parentheses: ``"sign_flip(scale=4),alie"``."""
    names, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            names.append(current.strip())
            current = ""
        else:
            current += ch
    return [n for n in (*names, current.strip()) if n]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("matrix", help="run every attack x defense pair; CSV + heatmap")
    from shieldwall.commands.run import add_config

    add_config(p, "base YAML config (its attack_args.byzantine_client_num is f)")
    p.add_argument("--attacks", required=True, help="comma-separated attack names")
    p.add_argument("--defenses", required=True,
                   help="comma-separated defenses; pre-aggregators joined with '+', e.g. nnm+krum")
    p.add_argument("--seeds", type=int, default=1, help="seeds per cell (0..k-1)")
    p.add_argument("--out", default="matrix", help="output folder (default: ./matrix)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="parallel processes (default: the core count)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="override a base config value")
    p.set_defaults(func=matrix_command)


def matrix_command(args: argparse.Namespace) -> int:
    from shieldwall.commands.run import config_path
    from shieldwall.config import load_config
    from shieldwall.matrix import NONE, plot_heatmap, run_matrix, write_csv

    base = load_config(config_path(args), args.overrides)
    attacks = [NONE, *[a for a in _names(args.attacks) if a != NONE]]
    defenses = [NONE, *[d for d in _names(args.defenses) if d != NONE]]
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    out = Path(args.out)
    results = run_matrix(base, attacks, defenses, range(args.seeds), out, jobs=args.jobs)
    csv_path = write_csv(results, attacks, defenses, out / "matrix.csv")
    png_path = plot_heatmap(results, attacks, defenses, out / "matrix.png",
                            title=f"{base.name}: final test accuracy (%)")
    print(csv_path.read_text().rstrip())
    print(f"wrote {csv_path} and {png_path}")
    return 0
