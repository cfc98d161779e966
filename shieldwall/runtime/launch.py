"""Where a multi-process run's rank, world and rendezvous come from.

Launchers put them in the environment:

* ``torchrun`` (and ``python -m torch.distributed.run``): ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
* Open MPI's ``mpirun``: ``OMPI_COMM_WORLD_RANK``, ``OMPI_COMM_WORLD_SIZE``,
  ``OMPI_COMM_WORLD_LOCAL_RANK``; the rendezvous address is ``MASTER_ADDR``/``MASTER_PORT``
  when set (``mpirun -x MASTER_ADDR=host0 -x MASTER_PORT=29500``; required on several nodes),
  else ``127.0.0.1`` and :data:`DEFAULT_MASTER_PORT`.

Hand-rolled launches (job schedulers, :mod:`.spawn` for tests and benchmarks) set
``RANK``/``WORLD_SIZE``/``MASTER_*`` themselves, exactly as torchrun would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from shieldwall.threads import configure_threads, launch_threads

__all__ = [
    "LaunchInfo",
    "detect_launch",
    "choose_backend",
    "launch_threads",
    "configure_threads",
    "DEFAULT_MASTER_PORT",
]

log = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = 29517
"""Rendezvous port under mpirun when ``MASTER_PORT`` is not set (torchrun always sets it)."""

DEFAULT_MASTER_ADDR = "127.0.0.1"


@dataclass(frozen=True)
class LaunchInfo:
    """This process's place in the run.

    Attributes:
        rank: global rank (0 is the server).
        world_size: number of processes.
        local_rank: rank on this node (picks the GPU with NCCL).
        master_addr, master_port: the TCP rendezvous (rank 0's host).
        launcher: ``torchrun``, ``mpirun`` or ``env`` (RANK/WORLD_SIZE set by hand).
    """

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str

    @property
    def init_method(self) -> str:
        return f"tcp://{self.master_addr}:{self.master_port}"


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    value = env.get(key)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"environment variable {key} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key}={value!r} is not an integer") from None


def detect_launch(env: Mapping[str, str] | None = None) -> LaunchInfo:
    """Read rank, world and rendezvous from the launcher's environment (see module docstring).

    Raises:
        ValueError: no launcher variables, or inconsistent ones.
    """
    env = os.environ if env is None else env
    addr = env.get("MASTER_ADDR") or DEFAULT_MASTER_ADDR
    if "RANK" in env and "WORLD_SIZE" in env:
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env"
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK", 0)
        port = _int(env, "MASTER_PORT", DEFAULT_MASTER_PORT)
    elif "OMPI_COMM_WORLD_SIZE" in env:
        launcher = "mpirun"
        rank, world = _int(env, "OMPI_COMM_WORLD_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE")
        local = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0)
        port = _int(env, "MASTER_PORT", DEFAULT_MASTER_PORT)
    else:
        raise ValueError(
            "the torch_distributed runtime needs a launcher: torchrun (RANK, WORLD_SIZE) or "
            "mpirun (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE); see docs/runtimes.md"
        )
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of size {world}")
    if not 0 < port < 65536:
        raise ValueError(f"MASTER_PORT {port} is not a TCP port")
    return LaunchInfo(rank, world, local, addr, port, launcher)


def choose_backend(comm_backend: str, using_gpu: bool) -> str:
    """``gloo`` or ``nccl`` for the run's process groups.

    NCCL (one GPU per rank, chosen by the local rank) when ``device_args.using_gpu`` is set, CUDA
    is available and ``comm_args.backend`` is not ``gloo``; else gloo. FedML's names (``MPI``,
    ``GRPC``, ``MQTT_S3``…) say "multi-process" and take the same rule.
    """
    name = comm_backend.lower()
    cuda = torch.cuda.is_available()
    if name == "nccl" and not cuda:
        return "gloo"
    if name == "gloo":
        return "gloo"
    return "nccl" if using_gpu and cuda and torch.distributed.is_nccl_available() else "gloo"
