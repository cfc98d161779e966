"""``shieldwall swarm-plot DIR [DIR…] [-o FILE]``: merge a swarm's peer logs into loss/ban plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register", "swarm_plot_command"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("swarm-plot", help="merge the peers' logs of a BTARD swarm into plots")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="peer run directories, or directories holding them")
    p.add_argument("-o", "--output", default="swarm.png", help="PNG path (default swarm.png)")
    p.add_argument("--attack-start", type=int, help="shade the attack window from this step")
    p.add_argument("--attack-end", type=int, help="... to this step (default: the end)")
    p.add_argument("--jsonl", help="also write the merged per-step records here")
    p.set_defaults(func=swarm_plot_command)


def swarm_plot_command(args: argparse.Namespace) -> int:
    from shieldwall.btard.swarm.logs import merge, plot

    records = merge(args.dirs)
    if args.jsonl:
        Path(args.jsonl).write_text("".join(json.dumps(r) + "\n" for r in records))
    attack = (args.attack_start, args.attack_end) if args.attack_start is not None else None
    print(f"wrote {plot(records, args.output, attack)} ({len(records)} steps, "
          f"{records[-1]['banned_total'] if records else 0} banned)")
    return 0
