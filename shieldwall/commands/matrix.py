"""``shieldwall matrix CONFIG --attacks a,b --defenses x,y [--seeds k]``: the attack × defense grid.

The no-attack row and the no-defense column are always included as references. Writes
``OUT/matrix.csv``, ``OUT/matrix.png`` (one ``OUT/matrix__key=value.png`` per combination of
``--axis`` values) and ``OUT/status.json`` (progress, failed cells); rerunning the same command
resumes. ``--axis SECTION.KEY=v1,v2`` (repeatable) adds a grid axis over a config key, e.g.
``--axis train_args.worker_momentum=0,0.9``. ``--executor ray|dask`` runs the cells on a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    p.add_argument("--axis", dest="axes", action="append", default=[],
                   metavar="SECTION.KEY=V1,V2",
                   help="a further grid axis over a config key (repeatable)")
    g = p.add_argument_group("where cells run (docs/cluster.md)")
    g.add_argument("--executor", choices=("local", "ray", "dask"), default="local",
                   help="local processes (default), Ray tasks or Dask futures")
    g.add_argument("--address", default="auto",
                   help="ray: 'auto' (the cluster this node joined), HEAD_HOST:PORT, or 'local' "
                        "(a private single-node Ray); default auto")
    g.add_argument("--scheduler", default=None, metavar="HOST:PORT",
                   help="dask: the distributed scheduler's address")
    g.add_argument("--results", choices=("auto", "shared", "ship"), default="auto",
                   help="shared: workers write into --out (same path on every node); ship: "
                        "run dirs come back as tar; auto (default): shared where a worker "
                        "sees --out, else ship")
    g.add_argument("--cpus-per-cell", type=float, default=1.0, help="CPUs a cell asks for")
    g.add_argument("--gpus-per-cell", type=float, default=1.0,
                   help="GPU share a CUDA cell asks for (0.25 packs 4 per GPU); default 1")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="override a base config value")
    p.set_defaults(func=matrix_command)


def parse_axes(specs: list[str]) -> dict[str, list]:
    """``["train_args.momentum=0,0.9"]`` → ``{"train_args.momentum": [0, 0.9]}`` (YAML values)."""
    from shieldwall.config.loader import yaml_value

    axes: dict[str, list] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or "." not in key or not values.strip():
            raise ValueError(f"--axis {spec!r}: expected SECTION.KEY=V1,V2")
        if key in axes:
            raise ValueError(f"--axis {key!r} given twice")
        axes[key] = [yaml_value(v) for v in _names(values)]
    return axes


def matrix_command(args: argparse.Namespace) -> int:
    from shieldwall.commands.run import config_path
    from shieldwall.config import load_config
    from shieldwall.config.ranges import positive
    from shieldwall.matrix import NONE, plot_heatmaps, run_matrix, write_csv

    base = load_config(config_path(args), args.overrides)
    attacks = [NONE, *[a for a in _names(args.attacks) if a != NONE]]
    defenses = [NONE, *[d for d in _names(args.defenses) if d != NONE]]
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1 (parallel processes), got {args.jobs}")
    positive("--cpus-per-cell", args.cpus_per_cell, allow_zero=True)
    positive("--gpus-per-cell", args.gpus_per_cell, allow_zero=True)
    axes = parse_axes(args.axes)
    out = Path(args.out)
    executor = None
    if args.executor != "local":
        from shieldwall.grid import build_executor

        executor = build_executor(args.executor, address=args.address, scheduler=args.scheduler)
    try:
        results = run_matrix(
            base, attacks, defenses, range(args.seeds), out, jobs=args.jobs, executor=executor,
            axes=axes,
            results=args.results, cpus_per_cell=args.cpus_per_cell,
            gpus_per_cell=args.gpus_per_cell, echo=lambda line: print(line, file=sys.stderr),
        )
    finally:
        if executor is not None:
            executor.close()
    csv_path = write_csv(results, attacks, defenses, out / "matrix.csv")
    pngs = plot_heatmaps(results, attacks, defenses, out,
                         title=f"{base.name}: final test accuracy (%)")
    print(csv_path.read_text().rstrip())
    print(f"wrote {csv_path} and {', '.join(str(p) for p in pngs)}")
    status = out / "status.json"
    failed = json.loads(status.read_text()).get("failed", {}) if status.is_file() else {}
    for name, why in failed.items():
        print(f"cell {name} FAILED: {why} (rerun the same command to retry it)")
    return 1 if failed else 0
