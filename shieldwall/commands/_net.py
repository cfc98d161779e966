"""The networked mode's two roles, shared by ``shieldwall server``/``client`` and by
``shieldwall run`` on a config with ``comm_args.runtime: grpc`` (or a FedML ``cross_silo``
config given ``--rank``/``--role``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from shieldwall.config import ExperimentConfig

__all__ = ["serve", "join", "networked_role"]


def networked_role(rank: int | None, role: str | None) -> int:
    """The rank this process plays: FedML's ``--rank`` (0 the server, K >= 1 client K), checked
    against FedML's ``--role`` (``server``/``client``) when both are given."""
    role = None if role is None else role.strip().lower()
    if role not in (None, "", "server", "client"):
        raise ValueError(f"--role: {role!r} is not one of: server, client")
    if rank is None:
        if role == "client":
            raise ValueError("--role client needs --rank K (K >= 1: the client's id)")
        return 0
    if rank < 0:
        raise ValueError(f"--rank: {rank} is negative; 0 is the server, K >= 1 client K")
    if role == "server" and rank != 0:
        raise ValueError(f"--role server with --rank {rank}: the server is rank 0")
    if role == "client" and rank == 0:
        raise ValueError("--role client with --rank 0: rank 0 is the server; clients are K >= 1")
    return rank


def serve(cfg: ExperimentConfig, *, resume: str | Path | None, force: bool) -> dict[str, Any]:
    """Run ``cfg`` as the networked server (its view: one client per listed id)."""
    import shieldwall.algorithms  # noqa: F401  (before shieldwall.runtime: import cycle)
    import shieldwall.runtime.net  # noqa: F401  (registers runtime "grpc")
    from shieldwall.runtime.net import network_view
    from shieldwall.runtime.net.grpc_log import HandshakeSummary
    from shieldwall.train import train

    with HandshakeSummary():  # gRPC's raw TLS handshake lines, summarised
        return train(network_view(cfg), resume=resume, force=force)


def join(cfg: ExperimentConfig, rank: int, *, node_rank: int | None = None,
         token: str | None = None) -> int:
    """Run client ``rank`` until the server ends training; the exit status (0 done, 3 refused
    by the server, 4 gave up reconnecting)."""
    import shieldwall.algorithms  # noqa: F401  (before shieldwall.runtime: import cycle)
    from shieldwall.runtime.net import ClientRefused
    from shieldwall.runtime.net.node import run_client

    try:
        rounds = run_client(cfg, rank, node_rank=node_rank, token=token)
    except ClientRefused as exc:
        print(f"shieldwall: error: {exc}", file=sys.stderr)
        return 3
    except ConnectionError as exc:
        print(f"shieldwall: error: {exc}", file=sys.stderr)
        return 4
    print(f"client {rank}: done, {rounds} rounds answered")
    return 0
