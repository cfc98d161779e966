"""Start a BTARD run as real processes on this machine: one ``shieldwall run`` per peer.

``python -m shieldwall.btard.launch CONFIG --peers 4 [--set k=v ...]`` starts ``--peers``
processes with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT`` and
``OMP_NUM_THREADS=1`` (torchrun sets the same variables), each running
``python -m shieldwall run CONFIG --set comm_args.runtime=torch_distributed``; they rendezvous
with gloo and run the protocol of :mod:`shieldwall.btard.protocol` over
:class:`~shieldwall.btard.transport.TorchDistTransport`. A banned peer's process leaves the
group and exits early; the lowest-ranked honest peer writes the run directory.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["free_port", "spawn_peers", "PeerProcess", "peer_process", "main"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PeerProcess:
    rank: int
    returncode: int
    output: str


def spawn_peers(
    config: str | Path,
    peers: int,
    *,
    overrides: Sequence[str] = (),
    timeout: float = 600.0,
    port: int | None = None,
) -> list[PeerProcess]:
    """Run ``config`` as ``peers`` processes and wait for all of them.

    Raises ``TimeoutError`` (after killing the processes) when they do not finish in ``timeout``.
    """
    port = port or free_port()
    args = ["--set", "comm_args.runtime=torch_distributed"]
    for item in overrides:
        args += ["--set", item]
    procs = []
    for rank in range(peers):
        env = dict(os.environ)
        env.update(
            RANK=str(rank), WORLD_SIZE=str(peers), LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
        )
        cmd = [sys.executable, "-m", "shieldwall", "run", str(config), *args]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    results = []
    try:
        for rank, proc in enumerate(procs):
            out, _ = proc.communicate(timeout=timeout)
            results.append(PeerProcess(rank, proc.returncode, out))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise TimeoutError(f"BTARD peers did not finish within {timeout} s") from None
    return results


def peer_process(
    rank: int, world: int, port: int, config: str, overrides: Sequence[str], out: Any
) -> None:
    """One peer as a ``multiprocessing`` target: set the rendezvous variables, run
    ``shieldwall.train.train`` and put ``(rank, "ok", summary)`` or ``(rank, "error", text)``
    on the queue ``out``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    try:
        import torch

        torch.set_num_threads(1)
        from shieldwall.config import load_config
        from shieldwall.train import train

        cfg = load_config(config, ["comm_args.runtime=torch_distributed", *overrides])
        out.put((rank, "ok", train(cfg)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put((rank, "error", repr(exc)))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--peers", type=int, required=True, help="processes (= client_num_in_total)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--timeout", type=float, default=3600.0)
    a = p.parse_args(argv)
    overrides = [f"train_args.client_num_in_total={a.peers}", *a.overrides]
    results = spawn_peers(a.config, a.peers, overrides=overrides, timeout=a.timeout)
    for r in results:
        print(f"--- peer {r.rank} (exit {r.returncode})\n{r.output.strip()}")
    return max(r.returncode for r in results)


if __name__ == "__main__":
    raise SystemExit(main())
