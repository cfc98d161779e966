"""``shieldwall peer CONFIG [--listen MADDR] [--initial-peers MADDR …]``: one BTARD swarm peer.

The first peer listens and prints its multiaddrs; every other peer names one or more of them
with ``--initial-peers`` and joins the run at the next step it can (downloading the agreed
state), at any time. Needs the ``swarm`` extra (``pip install -e ".[swarm]"``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["register", "peer_command"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("peer", help="run one peer of an open BTARD swarm (hivemind)")
    p.add_argument("config", help="BTARD YAML config (train_args.federated_optimizer: BTARD)")
    p.add_argument("--listen", "--host-maddrs", "--host_maddrs", nargs="+",
                   default=["/ip4/0.0.0.0/tcp/0"], metavar="MADDR",
                   help="multiaddrs to listen on (default /ip4/0.0.0.0/tcp/0: any free port)")
    p.add_argument("--announce-maddrs", "--announce_maddrs", nargs="+", default=[],
                   metavar="MADDR", help="the addresses others should dial (a public IP or a "
                   "forwarded port behind NAT), e.g. /ip4/203.0.113.7/tcp/31337")
    p.add_argument("--no-relay", "--no_relay", action="store_true",
                   help="do not use libp2p circuit relays (hivemind's use_relay=False)")
    p.add_argument("--use-auto-relay", "--use_auto_relay", action="store_true",
                   help="behind NAT: find relays among the peers and be reachable through them")
    p.add_argument("--use-ipfs", "--use_ipfs", action="store_true",
                   help="also bootstrap through the public IPFS DHT (needs the internet)")
    p.add_argument("--initial-peers", "--initial_peers", nargs="+", default=[], metavar="MADDR",
                   help="multiaddrs of peers already in the swarm (none: this peer starts it)")
    p.add_argument("--prefix", default="btard", help="the run's name in the DHT")
    p.add_argument("--byzantine", action="store_true",
                   help="behave as attack_args describe (experiments)")
    p.add_argument("--phase-timeout", type=float, default=30.0,
                   help="seconds a protocol phase waits for silent peers (default 30)")
    p.add_argument("--start-peers", type=int, default=2,
                   help="peers that must register before the first step starts (default 2)")
    p.add_argument("--step-interval", type=float, default=0.0,
                   help="least wall time of a step in seconds (default 0)")
    p.add_argument("--identity", metavar="PATH",
                   help="libp2p private key file (created if absent): a stable peer id")
    p.add_argument("--run-dir", help="this peer's output directory (must not exist; default "
                   "tracking_args.log_file_dir/<run_name>-peer-<id>)")
    p.set_defaults(func=peer_command)


def peer_command(args: argparse.Namespace) -> int:
    try:
        from shieldwall.btard.swarm.node import SwarmError, SwarmNode, SwarmOptions
    except ImportError as exc:
        raise ValueError(f"shieldwall peer needs hivemind: pip install -e '.[swarm]' "
                         f"({exc})") from None
    from shieldwall.config import load_config
    from shieldwall.config.ranges import positive

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_config(args.config)
    if str(cfg.train_args.federated_optimizer).upper() != "BTARD":
        raise ValueError("train_args.federated_optimizer must be BTARD for shieldwall peer")
    if args.start_peers < 2:
        raise ValueError(f"--start-peers must be >= 2, got {args.start_peers}")
    positive("--phase-timeout", args.phase_timeout)
    positive("--step-interval", args.step_interval, allow_zero=True)
    opts = SwarmOptions(listen=args.listen, initial_peers=args.initial_peers,
                        prefix=args.prefix, byzantine=args.byzantine,
                        phase_timeout=args.phase_timeout, start_peers=args.start_peers,
                        step_interval=args.step_interval, identity=args.identity,
                        announce=args.announce_maddrs, use_relay=not args.no_relay,
                        use_auto_relay=args.use_auto_relay, use_ipfs=args.use_ipfs)
    try:
        node = SwarmNode(cfg, opts)
    except SwarmError as exc:  # an identity file that cannot be used: one line, like a config
        raise ValueError(str(exc)) from None
    run_dir = args.run_dir or str(Path(cfg.tracking_args.log_file_dir)
                                  / f"{cfg.tracking_args.run_name or 'swarm'}-peer-{node.pid}")
    if Path(run_dir).exists():
        node.close()
        raise ValueError(f"--run-dir {run_dir} exists: never overwriting a run")
    opts.run_dir = Path(run_dir)
    for m in node.maddrs:
        print(f"listening: {m}", flush=True)
    print(f"peer id {node.transport.peer_id} (pid {node.pid}), run dir {run_dir}", flush=True)
    try:
        summary = node.run(joining=bool(args.initial_peers) and node.has_swarm())
    except SwarmError as exc:
        print(f"shieldwall: refused: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        node.close()
    print(f"done: step {summary['steps']}, banned {sorted(summary['banned'])}, "
          f"params {summary['params_hash'][:16]}", flush=True)
    return 0
