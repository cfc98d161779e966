"""The attack × defense matrix: every pair run as a normal run, summarised as CSV and heatmap.

A cell is (attack, defense, seed). Each runs :func:`shieldwall.train.train` on the base config
with the attack and defense replaced, in its own run directory
``OUT/cells/<attack>__<defense>__s<seed>``; a cell whose ``summary.json`` exists is finished and
is not run again, so an interrupted matrix resumes where it stopped (a cell cut off mid-run
continues from its checkpoint). Cells run on an executor (:mod:`shieldwall.grid`): by default
parallel local processes (``spawn``, one torch thread each), or tasks on a Ray or Dask cluster.

Further axes (``axes={"train_args.worker_momentum": [0, 0.9]}``, ``--axis`` on the command
line) set base-config keys per cell; their values join the cell's name
(``<attack>__<defense>__<key>=<value>__s<seed>``) and its row in the CSV, and every combination
of axis values gets its own heatmap. Cells run in the order given (:func:`grid_cells` builds the
cross product; a caller may reorder it so the most informative cells finish first), and
``on_result`` sees each cell as it finishes, so tables can be rewritten while the grid runs.
Execution sits behind :data:`Executor` (default :func:`process_pool`): a function mapping the
cells' raw configs to ``(cell, summary)`` pairs as they finish, so another backend (Ray, Dask)
can be swapped in.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shieldwall.algorithms.adversary import build_adversary
from shieldwall.algorithms.defense import build_defense
from shieldwall.config import ExperimentConfig, config_from_dict, config_to_dict
from shieldwall.config.loader import yaml_value

if TYPE_CHECKING:
    from shieldwall.grid import Executor

__all__ = [
    "Cell", "cell_config", "parse_spec", "grid_cells", "run_cells", "run_matrix",
    "summarize", "write_csv", "plot_heatmap", "plot_heatmaps",
]

log = logging.getLogger(__name__)

NONE = "none"
# What a cell checkpoints to: the round loop's file, or the BTARD driver's.
_CHECKPOINTS = ("checkpoint.pt", "btard_checkpoint.pt")


@dataclass(frozen=True)
class Cell:
    """One run: an attack, a defense, a seed and the values of any further axes."""

    attack: str
    defense: str
    seed: int
    axes: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def name(self) -> str:
        extra = "".join(f"__{_short(k)}={v}" for k, v in self.axes)
        raw = f"{self.attack}__{self.defense}{extra}__s{self.seed}"
        return re.sub(r"[^\w.+=-]+", "_", raw)

    @property
    def group(self) -> tuple[str, str, tuple[tuple[str, Any], ...]]:
        """The cell without its seed (what mean ± std is taken over)."""
        return self.attack, self.defense, self.axes


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def grid_cells(
    attacks: Sequence[str],
    defenses: Sequence[str],
    seeds: Sequence[int],
    axes: Mapping[str, Sequence[Any]] | None = None,
) -> list[Cell]:
    """Every (axes…, seed, attack, defense) combination, the last varying fastest."""
    combos: list[tuple[tuple[str, Any], ...]] = [()]
    for key, values in (axes or {}).items():
        if not values:
            raise ValueError(f"axis {key!r} has no values")
        combos = [(*c, (key, v)) for c in combos for v in values]
    return [Cell(a, d, s, c) for c in combos for s in seeds for a in attacks for d in defenses]


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
        params[key.strip()] = yaml_value(value)
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
    for key, value in cell.axes:
        section, sep, name = key.partition(".")
        if not sep or section not in raw or not isinstance(raw[section], dict):
            raise ValueError(
                f"axis {key!r}: expected SECTION.KEY with SECTION one of {', '.join(raw)}"
            )
        raw[section][name] = value
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
    """Run one cell's config (in whatever process the executor chose); its summary."""
    import torch

    from shieldwall.train import train

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    cfg = config_from_dict(raw)
    run_dir = Path(cfg.tracking_args.log_file_dir) / str(cfg.tracking_args.run_name)
    if any((run_dir / name).is_file() for name in _CHECKPOINTS):  # interrupted: continue it
        return train(cfg, resume=run_dir)
    if run_dir.is_dir():  # interrupted before its first checkpoint: nothing worth keeping
        shutil.rmtree(run_dir)
    return train(cfg)


def _stale(out_dir: Path, cell: Cell, raw: dict[str, Any]) -> list[str]:
    """What ``raw`` changes in the run already in ``cell``'s directory (settings that do not
    change what a run computes aside, but its number of rounds); empty when there is no run
    worth keeping there."""
    from shieldwall.rundir import config_changes

    run_dir = out_dir / "cells" / cell.name
    if not any((run_dir / name).is_file() for name in (*_CHECKPOINTS, "summary.json")):
        return []  # nothing there, or cut off before its first checkpoint: it runs again
    cfg = config_from_dict(raw)
    # ByzShield's --epochs rewrites comm_round when the run starts: not a change of the user's
    rounds_fixed = cfg.redundancy_args.epochs is None
    changes = config_changes(run_dir, cfg, 0, force=True)
    return [f"{c['key']} {c['old']!r} -> {c['new']!r}" for c in changes
            if c["kind"] != "operational"
            or (c["key"] == "train_args.comm_round" and rounds_fixed)]


def _finished(out_dir: Path, cell: Cell) -> dict[str, Any] | None:
    path = out_dir / "cells" / cell.name / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        summary = None
    if not isinstance(summary, dict) or "final_test_accuracy" not in summary:
        log.warning("%s is incomplete: cell %s runs again (from its checkpoint)", path, cell.name)
        return None
    return summary


def run_cells(
    base: ExperimentConfig,
    cells: Sequence[Cell],
    out_dir: str | Path,
    *,
    jobs: int = 2,
    executor: Executor | None = None,
    on_result: Callable[[dict[Cell, float]], None] | None = None,
    **grid_options: Any,
) -> dict[Cell, float]:
    """Run every cell without a ``summary.json`` yet, in order; each cell's final accuracy
    (failed cells are left out and listed in ``OUT/status.json``).

    Every cell's config is validated before any runs. Cells run on ``executor`` (default:
    ``jobs`` local processes; see :mod:`shieldwall.grid`); ``grid_options`` go to
    :func:`shieldwall.grid.run_cells` (``results``, ``cpus_per_cell``, ``gpus_per_cell``,
    ``echo``). ``on_result(results)`` is called once with the cells already finished and again
    after each cell that finishes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = {c: cell_config(base, c, out_dir) for c in cells}
    for raw in configs.values():  # validate every cell before spending time on any
        cfg = config_from_dict(raw)
        build_defense(cfg)
        build_adversary(cfg, num_classes=10)
    for cell in cells:  # a rerun with another config would reuse (or mix in) the old results
        stale = _stale(out_dir, cell, configs[cell])
        if stale:
            raise ValueError(
                f"{str(out_dir)!r} already holds cell {cell.name} run with another config "
                f"({'; '.join(stale[:3])}{'; …' if len(stale) > 3 else ''}): its results would "
                "be reused; choose another --out, or rerun with the config it was run with"
            )
    results: dict[Cell, float] = {}
    todo = []
    for cell in cells:
        done = _finished(out_dir, cell)
        if done is not None:
            results[cell] = done["final_test_accuracy"]
        else:
            todo.append(cell)
    log.info("matrix: %d cells, %d already finished", len(cells), len(cells) - len(todo))
    if on_result is not None:
        on_result(results)
    if todo:  # on `executor` (default: `jobs` local processes); see shieldwall.grid
        from shieldwall.grid import LocalProcessExecutor
        from shieldwall.grid import run_cells as run_grid

        by_name = {c.name: c for c in todo}

        def done(name: str, summary: dict[str, Any]) -> None:
            cell = by_name[name]
            results[cell] = summary["final_test_accuracy"]
            log.info("cell %s: %.4f", cell.name, results[cell])
            if on_result is not None:
                on_result(results)

        local = executor is None
        ex = LocalProcessExecutor(max(jobs, 1)) if local else executor
        try:
            run_grid(ex, {c.name: configs[c] for c in todo}, _run_cell, out_dir,
                     already_done=len(cells) - len(todo), on_done=done, **grid_options)
        finally:
            if local:
                ex.close()
    return results


def run_matrix(
    base: ExperimentConfig,
    attacks: Sequence[str],
    defenses: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    jobs: int = 2,
    axes: Mapping[str, Sequence[Any]] | None = None,
    executor: Executor | None = None,
    **grid_options: Any,
) -> dict[Cell, float]:
    """Run every missing cell of the grid; return each cell's final test accuracy (options as
    :func:`run_cells`)."""
    cells = grid_cells(attacks, defenses, seeds, axes)
    return run_cells(base, cells, out_dir, jobs=jobs, executor=executor, **grid_options)


def summarize(
    results: Mapping[Cell, float],
    attacks: Sequence[str],
    defenses: Sequence[str],
    combos: Sequence[tuple[tuple[str, Any], ...]] = ((),),
) -> list[tuple[tuple[tuple[str, Any], ...], str, str, float, float, int]]:
    """``(axes, attack, defense, mean, std, seeds)`` per group; NaN mean where none finished."""
    groups: dict[tuple, list[float]] = {}
    for cell, acc in results.items():
        if acc is not None:
            groups.setdefault(cell.group, []).append(float(acc))
    rows = []
    for combo in combos:
        for a in attacks:
            for d in defenses:
                accs = groups.get((a, d, tuple(combo)), [])
                mean = statistics.fmean(accs) if accs else math.nan
                std = statistics.stdev(accs) if len(accs) > 1 else 0.0
                rows.append((tuple(combo), a, d, mean, std, len(accs)))
    return rows


def _combos(results: Mapping[Cell, float]) -> list[tuple[tuple[str, Any], ...]]:
    return sorted({c.axes for c in results}, key=repr) or [()]


def write_csv(
    results: Mapping[Cell, float],
    attacks: Sequence[str],
    defenses: Sequence[str],
    path: Path,
    combos: Sequence[tuple[tuple[str, Any], ...]] | None = None,
) -> Path:
    """One row per (axes, attack, defense): mean and std of the final accuracy over seeds."""
    combos = list(combos) if combos is not None else _combos(results)
    keys = [k for k, _ in combos[0]] if combos else []
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [*keys, "attack", "defense", "accuracy_mean", "accuracy_std", "num_seeds"]
        )
        for combo, a, d, mean, std, k in summarize(results, attacks, defenses, combos):
            writer.writerow([*(v for _, v in combo), a, d, f"{mean:.4f}", f"{std:.4f}", k])
    return Path(path)


def plot_heatmap(
    results: Mapping[Cell, float],
    attacks: Sequence[str],
    defenses: Sequence[str],
    path: Path,
    title: str = "",
    combo: tuple[tuple[str, Any], ...] = (),
) -> Path:
    """Heatmap of final accuracy for one combination of axis values: rows are attacks,
    columns defenses, cells 'mean ± std' (blank where no seed finished)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = summarize(results, attacks, defenses, [combo])
    grid = np.array([r[3] for r in rows]).reshape(len(attacks), len(defenses))
    stds = np.array([r[4] for r in rows]).reshape(len(attacks), len(defenses))
    counts = np.array([r[5] for r in rows]).reshape(len(attacks), len(defenses))
    fig, ax = plt.subplots(figsize=(1.3 * len(defenses) + 2.5, 0.6 * len(attacks) + 1.8))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(defenses)), labels=defenses, rotation=35, ha="right")
    ax.set_yticks(range(len(attacks)), labels=attacks)
    for i in range(len(attacks)):
        for j in range(len(defenses)):
            if counts[i, j]:
                ax.text(j, i, f"{100 * grid[i, j]:.1f}\n±{100 * stds[i, j]:.1f}", ha="center",
                        va="center", fontsize=7)
    ax.set_xlabel("defense")
    ax.set_ylabel("attack")
    suffix = ", ".join(f"{_short(k)}={v}" for k, v in combo)
    ax.set_title((title or "final test accuracy (%)") + (f" [{suffix}]" if suffix else ""))
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_heatmaps(
    results: Mapping[Cell, float],
    attacks: Sequence[str],
    defenses: Sequence[str],
    out_dir: Path,
    stem: str = "matrix",
    title: str = "",
    combos: Sequence[tuple[tuple[str, Any], ...]] | None = None,
) -> list[Path]:
    """One heatmap per combination of axis values: ``stem.png`` or ``stem__k=v.png``."""
    paths = []
    for combo in (list(combos) if combos is not None else _combos(results)):
        extra = "".join(f"__{_short(k)}={v}" for k, v in combo)
        name = re.sub(r"[^\w.+=-]+", "_", f"{stem}{extra}") + ".png"
        paths.append(plot_heatmap(results, attacks, defenses, Path(out_dir) / name, title, combo))
    return paths
