"""Start a multi-process run's ranks on this machine, without torchrun (tests, benchmarks).

What torchrun does minus its elastic agent: each rank gets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT`` and ``OMP_NUM_THREADS=1`` and runs
``shieldwall ARGV``; a rank that dies takes nobody else down (torchrun and mpirun would stop every
rank), which is what tests of lost workers need. Its output goes to ``log_dir/rank-K.log``.

Two ways to start a rank:

* ``subprocess``: a fresh ``python -m shieldwall`` (seconds of imports per rank);
* ``forkserver``: forked from a :mod:`multiprocessing` fork server that imported torch and
  shieldwall once (:data:`PRELOAD`), so a rank starts in milliseconds and never inherits a
  parent's threads.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["free_port", "spawn_local", "LocalRank", "PRELOAD"]

PRELOAD = ["torch", "torch._dynamo", "shieldwall.train", "shieldwall.data", "sklearn.datasets"]
"""Modules the fork server imports once (torch imports ``torch._dynamo`` on an optimizer's
first use, and the embedded ``digits`` data set comes from scikit-learn)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalRank:
    """One started rank: a :class:`subprocess.Popen` or a :class:`multiprocessing.Process`."""

    rank: int
    handle: subprocess.Popen | multiprocessing.process.BaseProcess
    log_path: Path

    def wait(self, timeout: float | None = None) -> int | None:
        """Exit code, or ``None`` if still running after ``timeout`` seconds."""
        if isinstance(self.handle, subprocess.Popen):
            try:
                return self.handle.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        self.handle.join(timeout)
        return self.handle.exitcode

    def kill(self) -> None:
        if self.wait(0) is None:
            self.handle.kill()
            self.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _rank_env(rank: int, world: int, port: int, env: Mapping[str, str]) -> dict[str, str]:
    return {
        "OMP_NUM_THREADS": "1", **env, "RANK": str(rank), "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def _forked_main(argv: list[str], env: dict[str, str], log_path: str) -> None:
    """Body of a forked rank: its environment and log, then ``shieldwall ARGV``."""
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import torch

    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
    from shieldwall.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def spawn_local(
    world_size: int, argv: Sequence[str], *, log_dir: str | Path,
    env: Mapping[str, str] | None = None, rank_env: Mapping[int, Mapping[str, str]] | None = None,
    master_port: int | None = None, method: str = "subprocess",
) -> list[LocalRank]:
    """Start ``shieldwall ARGV`` as ranks ``0..world_size-1`` (see module docstring).

    Args:
        env: extra environment for every rank; ``rank_env``: per rank, on top.
        method: ``subprocess`` or ``forkserver``.
    """
    port = master_port or free_port()
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    ranks = []
    ctx = None
    if method == "forkserver":
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
    elif method != "subprocess":
        raise ValueError(f"method must be 'subprocess' or 'forkserver', not {method!r}")
    for rank in range(world_size):
        child = _rank_env(rank, world_size, port, {**(env or {}), **(rank_env or {}).get(rank, {})})
        log_path = log_dir / f"rank-{rank}.log"
        if ctx is not None:
            proc = ctx.Process(target=_forked_main, args=(list(argv), child, str(log_path)))
            proc.start()
            ranks.append(LocalRank(rank, proc, log_path))
            continue
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "shieldwall", *argv], env={**os.environ, **child},
                stdout=out, stderr=subprocess.STDOUT,
            )
        ranks.append(LocalRank(rank, popen, log_path))
    return ranks
