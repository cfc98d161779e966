"""The attack × defense matrix: every pair run as a normal run, summarised as CSV and heatmap.

A cell is (attack, defense, seed). Each runs :func:`shieldwall.train.train` on the base config
with the attack and defense replaced, in its own run directory
``OUT/cells/<attack>__<defense>__s<seed>``; a cell whose ``summary.json`` exists is finished and
is not run again, so an interrupted matrix resumes where it stopped (a cell cut off mid-run
continues from its checkpoint). Cells run on an executor (:mod:`shieldwall.grid`): by default
parallel local processes (``spawn``, one torch thread each), or tasks on a Ray or Dask cluster.

Spellings: an attack is a registered attack name or ``none``; a defense is an aggregator name,
optionally preceded by pre-aggregators joined with ``+`` (``nnm+krum``,
``bucketing+centered_clip``), or ``none`` (the undefended weighted mean). Any name may carry
parameters in parentheses: ``sign_flip(scale=4)``, ``bucketing(s=2)+centered_clip(tau=1)``.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shieldwall.algorithms.adversary import build_adversary
from shieldwall.algorithms.defense import build_defense
from shieldwall.config import ExperimentConfig, config_from_dict, config_to_dict

if TYPE_CHECKING:
    from shieldwall.grid import Executor

__all__ = ["Cell", "cell_config", "parse_spec", "run_matrix", "write_csv", "plot_heatmap"]

log = logging.getLogger(__name__)

NONE = "none"


@dataclass(frozen=True)
class Cell:
    attack: str
    defense: str
    seed: int

    @property
    def name(self) -> str:
        raw = f"{self.attack}__{self.defense}__s{self.seed}"
        return re.sub(r"[^\w.+=-]+", "_", raw)


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"name(k=v, k2=v2)"`` → ``("name", {"k": v, "k2": v2})`` (values parsed as YAML)."""
    match = re.fullmatch(r"\s*([\w\-]+)\s*(?:\((.*)\))?\s*", text)
    if match is None:
        raise ValueError(f"cannot read {text!r}: expected name or name(key=value, ...)")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in (match.group(2) or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"cannot read parameter {item!r} in {text!r}: expected key=value")
        params[key.strip()] = yaml.safe_load(value)
    return match.group(1), params


def split_defense(text: str) -> list[str]:
    """Split ``pre1(..)+pre2+agg(..)`` at the ``+`` signs outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "+" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def cell_config(base: ExperimentConfig, cell: Cell, out_dir: Path) -> dict[str, Any]:
    """The raw config of one cell: ``base`` with the cell's attack, defense and seed."""
    raw = config_to_dict(base)
    raw["common_args"]["random_seed"] = cell.seed
    attack = raw["attack_args"]
    if cell.attack == NONE:
        attack["enable_attack"] = False
    else:
        name, params = parse_spec(cell.attack)
        attack.update(enable_attack=True, attack_type=name, attack_mode=None, **params)
        if attack.get("byzantine_client_num", 0) == 0:
            raise ValueError("the base config needs attack_args.byzantine_client_num > 0")
    defense = raw["defense_args"]
    if cell.defense == NONE:
        defense.update(enable_defense=False, defense_type=None, preaggregators=[])
    else:
        *pre, agg = (parse_spec(part) for part in split_defense(cell.defense))
        defense.update(
            enable_defense=True,
            defense_type=agg[0],
            preaggregators=[{name: params} if params else name for name, params in pre],
            **agg[1],
        )
    if defense.get("byzantine_client_num") is None:
        # Defenses tolerate the attack's f even in the no-attack column.
        defense["byzantine_client_num"] = attack.get("byzantine_client_num", 0)
    raw["tracking_args"].update(
        log_file_dir=str(out_dir / "cells"), run_name=cell.name, progress_bar=False
    )
    return raw


def _run_cell(raw: dict[str, Any]) -> dict[str, Any]:
    import torch

    from shieldwall.train import train

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    cfg = config_from_dict(raw)
    run_dir = Path(cfg.tracking_args.log_file_dir) / str(cfg.tracking_args.run_name)
    if (run_dir / "checkpoint.pt").is_file():  # an interrupted cell: continue it
        return train(cfg, resume=run_dir)
    if run_dir.is_dir():  # interrupted before its first checkpoint: nothing worth keeping
        shutil.rmtree(run_dir)
    return train(cfg)


def _finished(out_dir: Path, cell: Cell) -> dict[str, Any] | None:
    path = out_dir / "cells" / cell.name / "summary.json"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def run_matrix(
    base: ExperimentConfig,
    attacks: Sequence[str],
    defenses: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    jobs: int = 2,
    executor: Executor | None = None,
    **grid_options: Any,
) -> dict[Cell, float]:
    """Run every missing cell; return each cell's final test accuracy (failed cells are left
    out and listed in ``OUT/status.json``). ``grid_options`` go to
    :func:`shieldwall.grid.run_cells` (``results``, ``cpus_per_cell``, ``gpus_per_cell``,
    ``echo``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = [Cell(a, d, s) for a in attacks for d in defenses for s in seeds]
    configs = {c: cell_config(base, c, out_dir) for c in cells}
    for raw in configs.values():  # validate every cell before spending time on any
        cfg = config_from_dict(raw)
        build_defense(cfg)
        build_adversary(cfg, num_classes=10)
    results: dict[Cell, float] = {}
    todo = []
    for cell in cells:
        done = _finished(out_dir, cell)
        if done is not None:
            results[cell] = done["final_test_accuracy"]
        else:
            todo.append(cell)
    log.info("matrix: %d cells, %d already finished", len(cells), len(cells) - len(todo))
    if todo:  # on `executor` (default: `jobs` local processes); see shieldwall.grid
        from shieldwall.grid import LocalProcessExecutor, run_cells

        local = executor is None
        ex = LocalProcessExecutor(max(jobs, 1)) if local else executor
        try:
            outcome = run_cells(ex, {c.name: configs[c] for c in todo}, _run_cell, out_dir,
                                already_done=len(cells) - len(todo), **grid_options)
        finally:
            if local:
                ex.close()
        for cell in todo:
            if cell.name in outcome.results:
                results[cell] = outcome.results[cell.name]["final_test_accuracy"]
    return results


def _summary(
    results: dict[Cell, float], attacks: Sequence[str], defenses: Sequence[str]
) -> list[tuple[str, str, float, float, int]]:
    rows = []
    for a in attacks:
        for d in defenses:
            accs = [v for c, v in results.items() if c.attack == a and c.defense == d]
            mean = statistics.fmean(accs) if accs else math.nan
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            rows.append((a, d, mean, std, len(accs)))
    return rows


def write_csv(
    results: dict[Cell, float], attacks: Sequence[str], defenses: Sequence[str], path: Path
) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["attack", "defense", "accuracy_mean", "accuracy_std", "num_seeds"])
        for a, d, mean, std, k in _summary(results, attacks, defenses):
            writer.writerow([a, d, f"{mean:.4f}", f"{std:.4f}", k])
    return path


def plot_heatmap(
    results: dict[Cell, float], attacks: Sequence[str], defenses: Sequence[str], path: Path,
    title: str = "",
) -> Path:
    """Heatmap of final accuracy: rows are attacks, columns defenses, cells 'mean ± std'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = _summary(results, attacks, defenses)
    grid = np.array([r[2] for r in rows]).reshape(len(attacks), len(defenses))
    stds = np.array([r[3] for r in rows]).reshape(len(attacks), len(defenses))
    fig, ax = plt.subplots(figsize=(1.3 * len(defenses) + 2.5, 0.6 * len(attacks) + 1.8))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(defenses)), labels=defenses, rotation=35, ha="right")
    ax.set_yticks(range(len(attacks)), labels=attacks)
    for i in range(len(attacks)):
        for j in range(len(defenses)):
            ax.text(j, i, f"{100 * grid[i, j]:.1f}\n±{100 * stds[i, j]:.1f}", ha="center",
                    va="center", fontsize=7)
    ax.set_xlabel("defense")
    ax.set_ylabel("attack")
    ax.set_title(title or "final test accuracy (%)")
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
