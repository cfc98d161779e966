"""``shieldwall server CONFIG``: the federated server of the networked mode (FedML's rank 0).

Runs the same training loop as ``shieldwall run`` (metrics, TensorBoard, checkpoints in the run
directory) with the gRPC runtime: clients are the ids of ``train_args.client_id_list``, started
with ``shieldwall client CONFIG --rank K``. ``--resume RUN_DIR`` continues a run from its last
checkpoint; clients reconnect on their own. See ``docs/networked.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shieldwall.commands.run import _common, _overrides, _report, add_config, config_path
from shieldwall.config import load_config

__all__ = ["register", "server_command"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="networked mode: the federated server (FedML's rank 0)")
    add_config(p, "YAML config (optional with --resume)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--rank", type=int, default=0, help="FedML's rank; the server is 0")
    p.add_argument("--role", help="FedML's role (accepted and ignored)")
    p.add_argument("--bind", help="address to listen on (comm_args.server_address)")
    p.add_argument("--port", type=int, help="port to listen on (comm_args.server_port)")
    _common(p)
    p.set_defaults(func=server_command)


def server_command(args: argparse.Namespace) -> int:
    import shieldwall.algorithms  # noqa: F401  (before shieldwall.runtime: import cycle)
    import shieldwall.runtime.net  # noqa: F401  (registers runtime "grpc")
    from shieldwall.runtime.net import network_view
    from shieldwall.train import train

    if args.rank != 0:
        raise ValueError(f"the server is rank 0 (got --rank {args.rank}); "
                         "start clients with `shieldwall client CONFIG --rank K`")
    config = config_path(args, optional=True)
    if config is None:
        if not args.resume:
            raise ValueError("give a CONFIG file, or --resume RUN_DIR to continue a run")
        config = str(Path(args.resume) / "config.yaml")
    overrides = _overrides(args)
    if args.bind:
        overrides.append(f"comm_args.server_address={args.bind}")
    if args.port is not None:
        overrides.append(f"comm_args.server_port={args.port}")
    cfg = network_view(load_config(config, overrides))
    _report(train(cfg, resume=args.resume))
    return 0
