"""``shieldwall client CONFIG --rank K``: a networked client (one organisation's silo).

Client ``K`` (an id of ``train_args.client_id_list``) hosts part ``K - 1`` of the data
partition (a FedML config with more parts than silos: the part FedML's ``data_silo_selection``
draws each round), connects to ``comm_args.server_address:server_port``, and answers rounds
until the server says training is over, reconnecting with back-off when the server is away. With
``client_silo_args`` asking for several trainers, it runs them as a DDP group (``--node-rank``
for the silo's other machines). Exit status: 0 done, 3 refused by the server, 4 gave up
reconnecting. See ``docs/networked.md``.
"""

from __future__ import annotations

import argparse
import logging

from shieldwall.commands._net import join
from shieldwall.commands.run import add_config, config_path
from shieldwall.config import load_config

__all__ = ["register", "client_command"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("client", help="networked mode: a federated client / silo (rank >= 1)")
    add_config(p, "YAML config (the same file as the server's)")
    p.add_argument("--rank", type=int, required=True, help="this client's id K (>= 1)")
    p.add_argument("--role", help="FedML's role (accepted and ignored)")
    p.add_argument("--node-rank", type=int,
                   help="this machine's rank in the silo (client_silo_args.node_rank_in_silo)")
    p.add_argument("--token", help="this client's token (default: $SHIELDWALL_TOKEN, then "
                                   "comm_args.auth_tokens/token_file)")
    p.add_argument("--server", metavar="HOST:PORT", help="the server (comm_args address/port)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable)",
    )
    p.set_defaults(func=client_command)


def client_command(args: argparse.Namespace) -> int:
    if args.rank < 1:
        raise ValueError(f"client ranks start at 1 (got --rank {args.rank}); "
                         "the server is `shieldwall server`")
    overrides = list(args.overrides)
    if args.server:
        host, _, port = args.server.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--server expects HOST:PORT, got {args.server!r}")
        overrides += [f"comm_args.server_address={host.strip('[]')}",
                      f"comm_args.server_port={port}"]
    cfg = load_config(config_path(args), overrides)
    return join(cfg, args.rank, node_rank=args.node_rank, token=args.token)
