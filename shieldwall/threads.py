"""Torch threads per process when a launch shares this node's cores.

Below every layer (it imports only torch): the run plumbing (:mod:`shieldwall.rundir`) and the
runtimes (:mod:`shieldwall.runtime.launch`, which re-exports these names) both use it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch

__all__ = ["LOCAL_SIZE_VARIABLES", "launch_threads", "configure_threads"]

log = logging.getLogger(__name__)

LOCAL_SIZE_VARIABLES = ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")
"""Processes of the run on this node: torchrun, Open MPI, MPICH (hydra)."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def launch_threads(
    env: Mapping[str, str] | None = None, cores: int | None = None
) -> tuple[int, int, int] | None:
    """Torch threads per process for a launch that shares this node's cores, or ``None``.

    ``(threads, local_world_size, cores)`` with ``threads = max(1, cores // local_world_size)``
    when a launcher says how many processes run on this node (``LOCAL_WORLD_SIZE``,
    ``OMPI_COMM_WORLD_LOCAL_SIZE`` or ``MPI_LOCALNRANKS``) and more than one does; ``None``
    when it does not say, when one process runs here, or when ``OMP_NUM_THREADS`` is set (the
    user's or torchrun's choice, which torch already follows).
    """
    env = os.environ if env is None else env
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    for key in LOCAL_SIZE_VARIABLES:
        value = env.get(key, "").strip()
        if value:
            try:
                local = int(value)
            except ValueError:
                return None
            if local <= 1:
                return None
            cores = _cores() if cores is None else cores
            return max(1, cores // local), local, cores
    return None


_told = False


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads for this process and return them.

    ``num_threads`` (``device_args.num_threads``) wins when given; else, under a launcher that
    starts several processes on this node, :func:`launch_threads` (logged once per process):
    without it, each of ``P`` processes would start one thread per core, and ``P`` times more
    threads than cores spin against each other in every kernel (rounds tens of times slower on
    a loaded machine). Otherwise torch's default (or ``OMP_NUM_THREADS``) is kept.
    """
    global _told
    if num_threads:
        torch.set_num_threads(num_threads)
        return num_threads
    plan = launch_threads()
    if plan is None:
        return torch.get_num_threads()
    threads, local, cores = plan
    torch.set_num_threads(threads)
    if not _told:
        _told = True
        log.info(
            "%d processes on %d cores: %d torch thread%s per process (set "
            "device_args.num_threads or OMP_NUM_THREADS to choose)",
            local, cores, threads, "" if threads == 1 else "s",
        )
    return threads
