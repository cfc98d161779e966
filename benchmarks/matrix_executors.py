"""Cells per minute of ``shieldwall matrix`` on each executor, and the per-cell overhead each adds.

Two grids, each run on the local executor (2 spawned processes), a private single-node Ray
(``ray.init(num_cpus=2)``) and, where installed, a Dask ``LocalCluster`` (2 worker processes, 1
thread each); every executor gets 2 slots:

* ``real``: a real matrix, 2 attacks × 2 defenses × 2 seeds = 8 cells of PS-SGD on the embedded
  digits (9 clients, ``--rounds`` rounds), run through :func:`shieldwall.grid.run_cells` exactly
  as ``shieldwall matrix`` does (shared output folder).
* ``warm``: the same 8 cells again on the same executor, its worker processes already started
  and torch already imported (the local executor's first ``real`` grid pays for spawning its
  processes and importing torch inside the grid; Ray and Dask start theirs during start-up).
* ``null``: ``--null-cells`` cells whose task does nothing (returns its config): the pure dispatch
  cost (pickling, scheduling, the status file) with no training and no torch import.

Per-cell overhead = wall × slots / cells − mean seconds a cell spent inside its task: the time a
slot was busy with something other than running the cell (start-up of processes or the cluster
connection amortised over the grid, scheduling, result transfer). Cluster start-up (``ray.init``,
``LocalCluster``) is reported separately and not counted in the grid's wall time.

Usage: ``python benchmarks/matrix_executors.py [--rounds 30] [--null-cells 40] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shieldwall.config import config_from_dict
from shieldwall.grid import DaskExecutor, LocalProcessExecutor, RayExecutor, run_cells
from shieldwall.matrix import Cell, _run_cell, cell_config

SLOTS = 2


def base(rounds: int):
    return config_from_dict({
        "data_args": {"dataset": "digits"},
        "train_args": {"federated_optimizer": "PS-SGD", "client_num_in_total": 9,
                       "comm_round": rounds, "batch_size": 16, "learning_rate": 0.1,
                       "momentum": 0.9},
        "validation_args": {"frequency_of_the_test": rounds},
        "device_args": {"num_threads": 1},
        "tracking_args": {"enable_tensorboard": False},
        "attack_args": {"byzantine_client_num": 2},
    })


def executors():
    """(name, start-up seconds, executor factory context) for each available executor."""
    yield "local", 0.0, LocalProcessExecutor(SLOTS), None
    try:
        import ray
    except ImportError:
        print("ray not installed: skipped", file=sys.stderr)
    else:
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=SLOTS, include_dashboard=False, log_to_driver=False)
        yield "ray", time.perf_counter() - t0, RayExecutor(), ray.shutdown
    try:
        from distributed import LocalCluster
    except ImportError:
        print("dask not installed: skipped", file=sys.stderr)
    else:
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=SLOTS, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        yield "dask", time.perf_counter() - t0, DaskExecutor(cluster.scheduler_address), \
            cluster.close


def measure(executor, configs, fn, out: Path) -> dict:
    outcome = run_cells(executor, configs, fn, out, results="shared", echo=lambda line: None)
    if outcome.failed:
        raise RuntimeError(f"failed cells: {outcome.failed}")
    n = len(configs)
    inside = statistics.fmean(outcome.seconds.values())
    return {"cells": n, "wall": outcome.wall_seconds,
            "per_min": n / outcome.wall_seconds * 60, "inside": inside,
            "overhead": outcome.wall_seconds * SLOTS / n - inside,
            "acc": {k: v.get("final_test_accuracy") for k, v in outcome.results.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--null-cells", type=int, default=40)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = base(args.rounds)
    lines = [
        f"# matrix executors: {platform.node()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start",
        "# NOTE: shared machine, heavily loaded by other developers' jobs at the time: absolute",
        "# times are inflated and noisy; compare the executors' rows with each other.",
        f"# real: 8 matrix cells (2 attacks x 2 defenses x 2 seeds, digits, {args.rounds} rounds);"
        f" warm: the same again; null: {args.null_cells} no-op cells; {SLOTS} slots each",
        "# overhead/cell = wall x slots / cells - in_cell; startup (ray.init, LocalCluster) is"
        " not in wall",
        f"{'executor':<8} {'grid':<5} {'startup_s':>9} {'cells':>5} {'wall_s':>7} "
        f"{'cells/min':>9} {'in_cell_s':>9} {'overhead/cell_s':>15}",
    ]
    print("\n".join(lines), flush=True)
    accs = {}
    for name, startup, ex, stop in executors():
        try:
            for grid in ("real", "warm", "null"):
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp)
                    if grid in ("real", "warm"):
                        cells = [Cell(a, d, s) for a in ("none", "sign_flip(scale=4)")
                                 for d in ("none", "median") for s in (0, 1)]
                        configs = {c.name: cell_config(cfg, c, out) for c in cells}
                        r = measure(ex, configs, _run_cell, out)
                        accs[name] = r["acc"]
                    else:
                        configs = {f"null{i}": {"tracking_args": {}}
                                   for i in range(args.null_cells)}
                        r = measure(ex, configs, dict, out)
                line = (f"{name:<8} {grid:<5} {startup:>9.1f} {r['cells']:>5} {r['wall']:>7.1f} "
                        f"{r['per_min']:>9.1f} {r['inside']:>9.3f} {r['overhead']:>15.3f}")
                lines.append(line)
                print(line, flush=True)
        finally:
            ex.close()
            if stop is not None:
                stop()
    same = all(a == accs["local"] for a in accs.values())
    lines.append(f"# final accuracies of the 8 real cells identical across executors: {same}")
    lines.append(f"# load average at end {os.getloadavg()[0]:.1f}")
    print(lines[-2] + "\n" + lines[-1])
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
