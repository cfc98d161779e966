"""``shieldwall plot RUN_DIR [RUN_DIR…] [-o FILE]``: accuracy and loss curves as PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "plot_command"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="PNG curves of accuracy and loss per round for run(s)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="one or more run directories")
    p.add_argument(
        "-o", "--output",
        help="PNG path (default: RUN_DIR/curves.png for one run, ./comparison.png for several)",
    )
    p.set_defaults(func=plot_command)


def plot_command(args: argparse.Namespace) -> int:
    from shieldwall.metrics.plot import plot_runs

    output = args.output
    if output is None:
        output = (
            Path(args.run_dirs[0]) / "curves.png" if len(args.run_dirs) == 1
            else Path("comparison.png")
        )
    path = plot_runs(args.run_dirs, output)
    print(f"wrote {path}")
    return 0
