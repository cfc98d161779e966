"""``shieldwall placement analyse|show``: redundancy placements and their worst case.

``shieldwall placement analyse --scheme mols --workers 15 --replication 3 --adversaries 0..7``
prints, for every q, c_max(q) (the most files q colluding workers control by winning their
majority vote), ε = c_max/F and a worst-case adversary set (:mod:`shieldwall.redundancy`).
``--file PATH`` analyses a user placement (JSON or CSV); ``--json`` prints JSON.
``shieldwall placement show …`` prints the placement itself (``--json``: loadable by ``--file``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register", "analyse_command", "show_command", "parse_adversaries"]


def parse_adversaries(text: str) -> list[int]:
    """``"0..7"``, ``"3"``, ``"1,3,5"`` or ``"0..3,8"`` → sorted distinct ints."""
    out: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            if ".." in part:
                lo, hi = part.split("..", 1)
                a, b = int(lo), int(hi)
                if a > b:
                    raise ValueError
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ValueError(
                f"--adversaries: cannot read {part!r}; write e.g. 0..7, 3 or 1,3,5"
            ) from None
    if not out:
        raise ValueError("--adversaries: no value given; write e.g. 0..7")
    return sorted(out)


def _placement_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheme", help="baseline, detox (draco-lite), mols, rama_one, rama_two, file")
    p.add_argument("--workers", "-K", type=int, help="number of workers K")
    p.add_argument("--replication", "-r", type=int, help="workers per file r")
    p.add_argument("--rama-m", type=int, dest="rama_m", help="m of rama_two (default r)")
    p.add_argument("--files-per-group", type=int, help="files per DETOX group (default 1)")
    p.add_argument("--file", dest="path", help="JSON or CSV placement (implies --scheme file)")
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("placement", help="redundancy placements: worst-case distortion analysis")
    p.set_defaults(func=lambda args: _usage(p))
    cmds = p.add_subparsers(dest="placement_command", metavar="SUBCOMMAND")
    a = cmds.add_parser(
        "analyse", aliases=["analyze"],
        help="c_max(q), ε and a worst-case adversary set for each q",
    )
    _placement_args(a)
    a.add_argument("--adversaries", "-q", default=None,
                   help="q values: 0..7, 3 or 1,3,5 (default 0..⌊K/2⌋)")
    a.add_argument("--method", default="auto",
                   help="auto, closed_form, milp, branch_and_bound or exhaustive")
    a.add_argument("--time-limit", type=float, default=60.0,
                   help="seconds per q for the exact search (then best found + bound)")
    a.set_defaults(func=analyse_command)
    s = cmds.add_parser("show", help="print the placement (files of every worker)")
    _placement_args(s)
    s.set_defaults(func=show_command)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _build(args: argparse.Namespace) -> Any:
    from shieldwall.redundancy import PLACEMENTS, build_placement

    path = getattr(args, "path", None)
    scheme = args.scheme or ("file" if path else None)
    if scheme is None:
        raise ValueError("placement: give --scheme (mols, rama_one, rama_two, detox, baseline) "
                         "or --file PATH")
    params: dict[str, Any] = {}
    canonical = PLACEMENTS.canonical(scheme)
    if canonical == "file":
        if not path:
            raise ValueError("placement: --scheme file needs --file PATH")
        return build_placement("file", args.workers, args.replication, path=path)
    if path:
        raise ValueError(f"placement: --file is only for --scheme file, not {scheme!r}")
    if args.workers is None:
        raise ValueError(f"placement: --scheme {canonical} needs --workers K")
    replication = args.replication
    if replication is None:
        if canonical != "baseline":
            raise ValueError(f"placement: --scheme {canonical} needs --replication r")
        replication = 1
    if args.rama_m is not None:
        if canonical != "rama_two":
            raise ValueError("placement: --rama-m is only for --scheme rama_two")
        params["m"] = args.rama_m
    if args.files_per_group is not None:
        if canonical != "detox":
            raise ValueError("placement: --files-per-group is only for --scheme detox")
        params["files_per_group"] = args.files_per_group
    return build_placement(canonical, args.workers, replication, **params)


def analyse_command(args: argparse.Namespace) -> int:
    from shieldwall.redundancy.analysis import distortion_table

    if not args.time_limit > 0:
        raise ValueError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    placement = _build(args)
    qs = (parse_adversaries(args.adversaries) if args.adversaries is not None
          else list(range(placement.num_workers // 2 + 1)))
    bad = [q for q in qs if q > placement.num_workers]
    if bad:
        raise ValueError(
            f"--adversaries: q must be ≤ K = {placement.num_workers}; "
            f"got {', '.join(map(str, bad))}"
        )
    rows = distortion_table(placement, qs, method=args.method, time_limit=args.time_limit)
    if args.json:
        print(json.dumps({
            "placement": {k: v for k, v in placement.to_dict().items() if k != "files_of_worker"},
            "majority": placement.majority,
            "rows": [r.to_dict() for r in rows],
        }, indent=2))
        return 0
    print(f"placement {placement.summary()}; a file is lost when {placement.majority} of its "
          f"{placement.replication} replicas lie")
    print(f"{'q':>3} {'c_max':>6} {'epsilon':>8} {'exact':>6} {'bound':>6}  worst-case adversaries")
    for r in rows:
        bound = "" if r.exact else f"≤{r.upper_bound}"
        print(f"{r.q:>3} {r.c_max:>6} {r.epsilon:>8.4f} {'yes' if r.exact else 'no':>6} "
              f"{bound:>6}  {r.adversaries}")
    return 0


def show_command(args: argparse.Namespace) -> int:
    placement = _build(args)
    if args.json:
        print(placement.to_json(indent=None))
        return 0
    print(f"placement {placement.summary()}")
    for k, files in enumerate(placement.files_of_worker):
        print(f"worker {k:>3}: {files}")
    return 0
