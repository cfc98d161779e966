"""Run directories and the round loop every driver shares (below all drivers and entry points).

* :mod:`.directory` — where a run lives: a fresh directory (never an existing run's), the lock
  that keeps a second writer out, the config it starts with;
* :mod:`.changes` — what ``--resume … --set`` changes mid-run: recorded with its round, or
  refused when it would make the run a different experiment;
* :mod:`.loop` — resuming from a checkpoint (:func:`open_run`) and running rounds with
  evaluation, metrics and checkpoints (:func:`run_rounds`).

Drivers (:mod:`shieldwall.drivers`) import this package; it imports no driver and no entry point.
"""

from shieldwall.rundir.changes import (
    STRUCTURAL,
    classify,
    config_changes,
    load_run_config,
    read_changes,
    record_changes,
)
from shieldwall.rundir.directory import (
    Resume,
    RunDirError,
    claim_run_dir,
    held_run_dirs,
    make_run_dir,
    record_config,
    release_run_dir,
    run_files,
    write_text_atomic,
)
from shieldwall.rundir.loop import (
    Stateful,
    device_for,
    finished_summary,
    is_test_round,
    open_run,
    open_run_dir,
    run_rounds,
)

__all__ = [
    "STRUCTURAL",
    "Resume",
    "RunDirError",
    "Stateful",
    "claim_run_dir",
    "classify",
    "config_changes",
    "device_for",
    "finished_summary",
    "held_run_dirs",
    "is_test_round",
    "load_run_config",
    "make_run_dir",
    "open_run",
    "open_run_dir",
    "read_changes",
    "record_changes",
    "record_config",
    "release_run_dir",
    "run_files",
    "run_rounds",
    "write_text_atomic",
]
