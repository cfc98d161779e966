"""Where a run lives: its directory, the lock that keeps other processes out, the config it records.

A run directory holds ``config.yaml`` (the resolved config the run started with),
``config_changes.yaml`` (what ``--resume … --set`` changed, and from which round; see
:mod:`.changes`), ``metrics.jsonl``, ``tensorboard/``, the checkpoint, ``final_params.pt``,
``summary.json`` and ``.lock``.

* **Never overwritten.** :func:`make_run_dir` makes a fresh directory: a generated name that
  exists gets a ``-2``, ``-3``… suffix; an explicit ``tracking_args.run_name`` (``--run-name``)
  whose directory already holds a run is refused with one line that suggests ``--resume`` or
  another name (a named run is something the user means to find again, so it is never renamed
  behind their back).
* **One writer.** The process that writes a run directory holds an exclusive ``fcntl.flock`` on
  its ``.lock`` file (which records the holder's pid) from opening the directory to the end of
  the run. A second writer (``--resume`` of a live run, the same ``--run-name`` twice at once)
  fails at once with one line naming the holder's pid. The kernel drops the lock when its holder
  exits, however it exits (``kill -9`` included), so a stale ``.lock`` file never blocks.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from shieldwall.atomic import write_text_atomic
from shieldwall.config import ExperimentConfig, config_to_dict

__all__ = [
    "CONFIG_NAME",
    "LOCK_NAME",
    "Resume",
    "RunDirError",
    "claim_run_dir",
    "fresh_log_dir",
    "held_run_dirs",
    "make_run_dir",
    "record_config",
    "release_run_dir",
    "run_files",
    "write_text_atomic",
]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
LOCK_NAME = ".lock"
# Files whose presence means a directory holds a run (started or finished).
_RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", "btard_checkpoint.pt",
              "summary.json", "final_params.pt")

# Run directories this process holds the lock of: resolved path -> lock file descriptor.
_HELD: dict[Path, int] = {}


class RunDirError(ValueError):
    """A run directory that cannot be written (taken by another process, or holding a run)."""


@dataclass(frozen=True)
class Resume(os.PathLike):
    """A run directory to continue, and whether ``--set`` may change what fixes the experiment.

    Behaves as a path (``Path(resume)`` works), so drivers that take ``resume: str | Path`` pass
    it along unchanged to :func:`shieldwall.rundir.open_run`.
    """

    path: Path
    force: bool = False

    def __fspath__(self) -> str:
        return str(self.path)


def run_files(run_dir: Path) -> list[str]:
    """The run files ``run_dir`` holds (empty: no run there)."""
    return [name for name in _RUN_FILES if (run_dir / name).exists()]


def claim_run_dir(run_dir: str | Path) -> Path:
    """Take the writer's lock of ``run_dir`` (idempotent within a process); returns its path.

    Raises :class:`RunDirError` naming the holder's pid when another live process holds it.
    """
    path = Path(run_dir).expanduser().resolve()
    if path in _HELD:
        return path
    if not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} does not exist")
    lock = path / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirError(
            f"run directory {str(path)!r} is being written by process {holder} (lock "
            f"{LOCK_NAME}); wait for it to end or stop it, then --resume {path}"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[path] = fd
    return path


def release_run_dir(run_dir: str | Path) -> None:
    """Drop this process's lock of ``run_dir`` (nothing when it holds none)."""
    fd = _HELD.pop(Path(run_dir).expanduser().resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def held_run_dirs() -> frozenset[Path]:
    """The run directories this process holds the lock of."""
    return frozenset(_HELD)


def _must_be_folder(path: Path, key: str) -> None:
    """RunDirError naming ``key`` when ``path`` or a folder above it is a file."""
    for above in (path, *path.parents):
        if above.exists():
            if not above.is_dir():
                raise RunDirError(f"{key}: {str(above)!r} is a file, not a folder; choose "
                                  "another folder for the runs")
            return


def make_run_dir(cfg: ExperimentConfig) -> Path:
    """A fresh, locked directory for a new run (see the module docstring)."""
    parent = Path(cfg.tracking_args.log_file_dir).expanduser()
    name = cfg.tracking_args.run_name
    _must_be_folder(parent, "tracking_args.log_file_dir (--log-dir)")
    if name:
        run_dir = parent / name
        _must_be_folder(run_dir, "tracking_args.run_name (--run-name)")
        run_dir.mkdir(parents=True, exist_ok=True)
        claim_run_dir(run_dir)
        found = run_files(run_dir)
        if found:
            release_run_dir(run_dir)
            raise RunDirError(
                f"run directory {str(run_dir)!r} already holds a run ({', '.join(found)}); "
                f"continue it with --resume {run_dir}, or choose another --run-name "
                "(tracking_args.run_name)"
            )
        return run_dir
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    for i in itertools.count(1):
        run_dir = parent / (base if i == 1 else f"{base}-{i}")
        try:
            run_dir.mkdir()  # atomic: two runs started in the same second get two directories
        except FileExistsError:
            continue
        claim_run_dir(run_dir)
        return run_dir
    raise AssertionError("unreachable")  # pragma: no cover


def fresh_log_dir(path: str | Path) -> Path:
    """``path`` if it holds no run, else the first of ``path-2``, ``path-3``… that holds none;
    created and locked. For drivers whose users name a log directory they reuse from run to run
    (``shieldwall ddp -tb runs``, as TensorBoard allows): the earlier run's files are kept."""
    path = Path(path).expanduser()
    for i in itertools.count(1):
        run_dir = path if i == 1 else path.with_name(f"{path.name}-{i}")
        if run_dir.exists() and not run_dir.is_dir():
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            claim_run_dir(run_dir)
        except RunDirError:  # a live run writes there
            continue
        if run_files(run_dir):
            release_run_dir(run_dir)
            continue
        if run_dir != path:
            log.warning("%s already holds a run; this one writes to %s", path, run_dir)
        return run_dir
    raise AssertionError("unreachable")  # pragma: no cover


def record_config(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Write the resolved config a new run starts with (``config.yaml``); a resumed run keeps
    its own and records changes in ``config_changes.yaml`` instead (:mod:`.changes`)."""
    write_text_atomic(run_dir / CONFIG_NAME, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
