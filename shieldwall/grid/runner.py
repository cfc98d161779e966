"""Drive a grid of cells through an :class:`~shieldwall.grid.executors.Executor`.

:func:`run_cells` keeps at most ``executor.capacity(resources)`` cells in flight, retries a
cell whose worker died once (a second death, or any exception the cell raises, records it as
failed with the reason, and the rest of the grid goes on), unpacks shipped run directories into
the output folder, and reports progress after every event: one console line
(``grid: 5/12 done, 2 running, 1 failed, 0.9 cells/min, ETA 7m40s``) and ``OUT/status.json``
(rewritten atomically; field list in :func:`run_cells`). Which cells still need running is the
caller's business (the matrix skips every cell whose ``summary.json`` exists, so a grid resumes
the same whichever executor ran its finished cells).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shieldwall.atomic import write_text_atomic
from shieldwall.grid.executors import CellError, Executor, Resources, WorkerDied
from shieldwall.grid.task import RESULTS_MODES, CellTask, run_cell_task, unpack_run_dir
from shieldwall.rundir.directory import (
    LOCK_NAME,
    RunDirError,
    claim_run_dir,
    held_run_dirs,
    release_run_dir,
)

__all__ = ["GridOutcome", "cell_resources", "run_cells"]

log = logging.getLogger(__name__)

KILL_HOOK_ENV = "SHIELDWALL_GRID_TEST_KILL"
"""Test hook, ``SUBSTRING:K``: cells whose name contains SUBSTRING kill their worker process on
their first K attempts (K = 1: the retry succeeds; K = 2: the cell is recorded as failed)."""


@dataclass
class GridOutcome:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Cell name → the summary its run returned."""
    failed: dict[str, str] = field(default_factory=dict)
    """Cell name → why it failed."""
    retried: dict[str, str] = field(default_factory=dict)
    """Cell name → why its first attempt was lost (its worker died)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Cell name → seconds the cell ran on its worker (the benchmark's in-task time)."""
    wall_seconds: float = 0.0


def cell_resources(raw: Mapping[str, Any], cpus_per_cell: float = 1.0,
                   gpus_per_cell: float = 1.0) -> Resources:
    """A cell's resources: ``cpus_per_cell`` cores, plus ``gpus_per_cell`` of a GPU when the
    cell's config puts it on CUDA (``device_args.device: cuda…`` or ``using_gpu: true``)."""
    dev = raw.get("device_args") or {}
    device = str(dev.get("device") or "")
    on_gpu = device.startswith("cuda") or (not device and bool(dev.get("using_gpu")))
    return Resources(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell if on_gpu else 0.0)


def _kill_hook(name: str) -> int:
    spec = os.environ.get(KILL_HOOK_ENV, "")
    substring, _, count = spec.rpartition(":")
    return int(count) if spec and substring in name else 0


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class _Progress:
    def __init__(self, out_dir: Path, executor: str, total: int, already_done: int,
                 echo: Callable[[str], None] | None) -> None:
        self.path = out_dir / "status.json"
        self.executor, self.total, self.already = executor, total, already_done
        self.echo = echo
        self.start = time.monotonic()

    def update(self, outcome: GridOutcome, running: list[str], pending: int,
               finished: bool = False, event: str = "") -> None:
        elapsed = time.monotonic() - self.start
        done_now = len(outcome.results)
        rate = done_now / elapsed * 60 if done_now and elapsed > 0 else None
        remaining = len(running) + pending
        eta = remaining / rate * 60 if rate else None
        if finished:
            eta = 0.0
        status = {
            "executor": self.executor,
            "total": self.total,
            "done": self.already + done_now,
            "done_before": self.already,
            "running": sorted(running),
            "pending": pending,
            "failed": dict(sorted(outcome.failed.items())),
            "retried": dict(sorted(outcome.retried.items())),
            "cells_per_minute": rate,
            "eta_seconds": eta,
            "elapsed_seconds": elapsed,
            "finished": finished,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_text_atomic(self.path, json.dumps(status, indent=1) + "\n")
        line = (f"grid[{self.executor}]: {status['done']}/{self.total} done, {len(running)} "
                f"running, {len(outcome.failed)} failed"
                + (f", {rate:.2f} cells/min" if rate else "") + f", ETA {_fmt_eta(eta)}"
                + (f"  ({event})" if event else ""))
        if self.echo is not None:
            self.echo(line)
        else:
            log.info("%s", line)


def run_cells(
    executor: Executor,
    configs: Mapping[str, dict[str, Any]],
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    out_dir: str | Path,
    *,
    results: str = "auto",
    cpus_per_cell: float = 1.0,
    gpus_per_cell: float = 1.0,
    already_done: int = 0,
    echo: Callable[[str], None] | None = None,
    on_done: Callable[[str, dict[str, Any]], None] | None = None,
) -> GridOutcome:
    """Run ``fn(raw)`` for every ``name → raw`` of ``configs`` on ``executor``.

    Each ``raw`` must put its run directory at ``tracking_args.log_file_dir / name``.
    ``results``: ``auto``/``shared``/``ship`` (see :mod:`shieldwall.grid.task`). Writes
    ``OUT/status.json`` with ``executor, total, done, done_before, running, pending,
    failed {name: reason}, retried {name: reason}, cells_per_minute, eta_seconds,
    elapsed_seconds, finished, updated``. ``on_done(name, summary)`` is called as each cell
    finishes.
    """
    if results not in RESULTS_MODES:
        raise ValueError(f"unknown results mode {results!r}; choose one of "
                         f"{', '.join(RESULTS_MODES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    held_before = out_dir.resolve() in held_run_dirs()  # a caller's lock stays the caller's
    try:  # one grid per folder: a second would run the same cells and rewrite status.json
        claim_run_dir(out_dir)
    except RunDirError:
        raise RunDirError(
            f"grid folder {str(out_dir)!r} is in use by another grid (process "
            f"{_lock_holder(out_dir)}); wait for it to end or stop it, then run the same "
            "command again: finished cells are kept"
        ) from None
    try:
        return _run_cells(executor, configs, fn, out_dir, results, cpus_per_cell,
                          gpus_per_cell, already_done, echo, on_done)
    finally:
        if not held_before:
            release_run_dir(out_dir)


def _lock_holder(out_dir: Path) -> str:
    try:
        return (out_dir / LOCK_NAME).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _run_cells(
    executor: Executor,
    configs: Mapping[str, dict[str, Any]],
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    out_dir: Path,
    results: str,
    cpus_per_cell: float,
    gpus_per_cell: float,
    already_done: int,
    echo: Callable[[str], None] | None,
    on_done: Callable[[str, dict[str, Any]], None] | None,
) -> GridOutcome:
    marker = out_dir / f".shieldwall-shared-{uuid.uuid4().hex}"
    marker.write_text("present on every node that shares this folder\n")
    outcome = GridOutcome()
    progress = _Progress(out_dir, executor.name, already_done + len(configs), already_done, echo)
    queue = deque(configs)
    attempts: dict[str, int] = {}
    running: dict[str, float] = {}
    start = time.monotonic()

    def fill() -> None:
        while queue:
            name = queue[0]
            res = cell_resources(configs[name], cpus_per_cell, gpus_per_cell)
            if len(running) >= executor.capacity(res):
                return
            queue.popleft()
            task = CellTask(name=name, raw=configs[name], fn=fn, attempt=attempts.get(name, 0),
                            results=results, marker=str(marker), kill_attempts=_kill_hook(name))
            executor.submit(name, run_cell_task, task, res)
            running[name] = time.monotonic()

    try:
        fill()
        progress.update(outcome, list(running), len(queue), event="started")
        for name, value in executor.as_completed():
            running.pop(name, None)
            if isinstance(value, WorkerDied) and attempts.get(name, 0) == 0:
                attempts[name] = 1
                outcome.retried[name] = str(value)
                queue.appendleft(name)
                event = f"{name}: worker died ({value}); retrying once"
                log.warning("%s", event)
            elif isinstance(value, WorkerDied | CellError):
                why = f"worker died again: {value}" if isinstance(value, WorkerDied) else str(value)
                outcome.failed[name] = why
                event = f"{name} FAILED: {why}"
                log.warning("%s", event)
            else:
                try:
                    if value.get("tar") is not None:
                        dest = Path(configs[name]["tracking_args"]["log_file_dir"])
                        if (dest / name).is_dir() and not (dest / name / "summary.json").exists():
                            shutil.rmtree(dest / name)  # an interrupted local attempt
                        unpack_run_dir(value["tar"], name, dest)
                    outcome.results[name] = value["summary"]
                    outcome.seconds[name] = float(value["seconds"])
                    event = f"{name} done on {value.get('host', '?')} in {value['seconds']:.1f}s"
                    if on_done is not None:
                        on_done(name, value["summary"])
                except (ValueError, KeyError, TypeError, OSError) as exc:
                    outcome.failed[name] = f"bad result from worker: {exc}"
                    event = f"{name} FAILED: {outcome.failed[name]}"
            fill()
            progress.update(outcome, list(running), len(queue), event=event)
    finally:
        marker.unlink(missing_ok=True)
    outcome.wall_seconds = time.monotonic() - start
    progress.update(outcome, [], 0, finished=True, event="finished")
    return outcome
