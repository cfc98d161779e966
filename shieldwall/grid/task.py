"""What runs on the worker for one cell: pick where its run directory goes, run it, ship it.

Where results land (``results`` of :class:`CellTask`):

- ``"shared"``: the cell writes its run directory straight into the matrix's output folder,
  which every node must see at the same path (NFS, a cluster file system, or one machine).
- ``"ship"``: the cell runs in a temporary folder on the worker; its run directory comes back to
  the driver as a gzipped tar inside the task's result and is unpacked into the output folder.
  A cell cut off mid-run then restarts from scratch (its checkpoint was on the worker).
- ``"auto"`` (the default): the driver writes a one-off marker file into the output folder;
  a worker that sees it writes in place, one that does not ships back.

Data: the cell reads ``data_args.data_cache_dir`` as given, so every node needs the data at
that path; a node whose copy lives elsewhere sets ``SHIELDWALL_DATA_DIR`` in its environment
(for example ``SHIELDWALL_DATA_DIR=/scratch/data ray start ...``), which replaces the path for
the cells that node runs. Nothing is downloaded.
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_MODES", "CellTask", "run_cell_task", "unpack_run_dir"]

RESULTS_MODES = ("auto", "shared", "ship")
DATA_DIR_ENV = "SHIELDWALL_DATA_DIR"
MAX_SHIPPED_BYTES = 2 << 30  # a run directory larger than 2 GiB is not shipped back


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs to run one cell (pickled to the worker)."""

    name: str
    """The cell's run name (its folder under ``log_file_dir``)."""
    raw: dict[str, Any]
    """The cell's full raw config (``tracking_args.log_file_dir`` is the driver's folder)."""
    fn: Callable[[dict[str, Any]], dict[str, Any]]
    """Runs a raw config and returns its summary (``shieldwall.matrix._run_cell``)."""
    attempt: int = 0
    """0 for the first try, 1 for the retry after a dead worker."""
    results: str = "auto"
    """``auto``, ``shared`` or ``ship`` (module docstring)."""
    marker: str = ""
    """The marker file that ``auto`` looks for."""
    kill_attempts: int = 0
    """Test hook: the worker process exits abruptly while ``attempt < kill_attempts``."""


def run_cell_task(task: CellTask) -> dict[str, Any]:
    """Run one cell on this worker; returns ``{"summary", "seconds", "host", "tar"}``."""
    if task.attempt < task.kill_attempts:
        os._exit(17)  # simulate a worker killed mid-grid (OOM killer, preempted node)
    start = time.perf_counter()
    raw = {section: dict(values) if isinstance(values, dict) else values
           for section, values in task.raw.items()}
    if os.environ.get(DATA_DIR_ENV):
        raw["data_args"]["data_cache_dir"] = os.environ[DATA_DIR_ENV]
    ship = task.results == "ship" or (
        task.results == "auto" and not (task.marker and Path(task.marker).is_file())
    )
    if not ship:
        summary = task.fn(raw)
        return {"summary": summary, "seconds": time.perf_counter() - start,
                "host": socket.gethostname(), "tar": None}
    with tempfile.TemporaryDirectory(prefix="shieldwall-cell-") as tmp:
        raw["tracking_args"]["log_file_dir"] = tmp
        summary = task.fn(raw)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(Path(tmp) / task.name, arcname=task.name)
        return {"summary": summary, "seconds": time.perf_counter() - start,
                "host": socket.gethostname(), "tar": buf.getvalue()}


def unpack_run_dir(blob: bytes, name: str, dest: Path) -> Path:
    """Unpack a shipped run directory into ``dest/name``; anything outside it is refused."""
    if len(blob) > MAX_SHIPPED_BYTES:
        raise ValueError(f"shipped run directory of {name} is {len(blob)} bytes, over the limit")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not parts or parts[0] != name or ".." in parts or member.name.startswith("/"):
                raise ValueError(f"shipped run directory of {name} holds {member.name!r}")
        tar.extractall(dest, filter="data")
    return dest / name
