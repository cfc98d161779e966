"""Run directories and the round loop every driver shares (below all drivers and entry points).

* :mod:`.directory` — where a run lives and the resolved config it records;
* :mod:`.loop` — resuming from a checkpoint (:func:`open_run`) and running rounds with
  evaluation, metrics and checkpoints (:func:`run_rounds`).

Drivers (:mod:`shieldwall.drivers`) import this package; it imports no driver and no entry point.
"""

from shieldwall.rundir.directory import make_run_dir, record_config
from shieldwall.rundir.loop import Stateful, device_for, open_run, run_rounds

__all__ = [
    "Stateful",
    "device_for",
    "make_run_dir",
    "open_run",
    "record_config",
    "run_rounds",
]
