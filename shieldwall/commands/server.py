"""``shieldwall server CONFIG``: the federated server of the networked mode (FedML's rank 0).

Runs the same training loop as ``shieldwall run`` (metrics, TensorBoard, checkpoints in the run
directory) with the gRPC runtime: clients are the ids of ``train_args.client_id_list``, started
with ``shieldwall client CONFIG --rank K``. ``--resume RUN_DIR`` continues a run from its last
checkpoint; clients reconnect on their own. See ``docs/networked.md``.
"""

from __future__ import annotations

import argparse

from shieldwall.commands._net import serve
from shieldwall.commands.run import _common, _load, _overrides, _report, _resume_args, add_config

__all__ = ["register", "server_command"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="networked mode: the federated server (FedML's rank 0)")
    add_config(p, "YAML config (optional with --resume)")
    _resume_args(p)
    p.add_argument("--rank", type=int, default=0, help="FedML's rank; the server is 0")
    p.add_argument("--role", help="FedML's role (accepted and ignored)")
    p.add_argument("--bind", help="address to listen on (comm_args.server_address)")
    p.add_argument("--port", type=int, help="port to listen on (comm_args.server_port)")
    _common(p)
    p.set_defaults(func=server_command)


def server_command(args: argparse.Namespace) -> int:
    if args.rank != 0:
        raise ValueError(f"the server is rank 0 (got --rank {args.rank}); "
                         "start clients with `shieldwall client CONFIG --rank K`")
    overrides = _overrides(args)
    if args.bind:
        overrides.append(f"comm_args.server_address={args.bind}")
    if args.port is not None:
        overrides.append(f"comm_args.server_port={args.port}")
    _report(serve(_load(args, overrides), resume=args.resume, force=args.force))
    return 0
