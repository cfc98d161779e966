"""``shieldwall certs OUT_DIR --clients 1,2,3``: test CA, server and client certificates
(and with ``--tokens`` a ``tokens.yaml`` of per-client tokens) for the networked mode."""

from __future__ import annotations

import argparse

__all__ = ["register", "certs_command"]


def _ids(text: str) -> list[int]:
    """``N`` → 1..N; ``1,2,3`` → those ids (checked by :func:`make_certificates`)."""
    text = text.strip()
    if text.isdigit():
        return list(range(1, int(text) + 1))
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a count N or comma-separated client ids (1,2,3)") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certs", help="networked mode: write test TLS certificates and tokens")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into")
    p.add_argument("--clients", required=True, type=_ids, metavar="IDS",
                   help="client ids, comma-separated (1,2,3), or a count N for 1..N")
    p.add_argument("--host", action="append", dest="hosts", metavar="NAME_OR_IP",
                   help="server name or IP for the server certificate (repeatable; "
                        "default: localhost and 127.0.0.1)")
    p.add_argument("--days", type=int, default=30, help="validity (default 30 days)")
    p.add_argument("--tokens", action="store_true", help="also write OUT_DIR/tokens.yaml")
    p.set_defaults(func=certs_command)


def certs_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from shieldwall.runtime.net.certs import check_new, make_certificates, make_tokens

    hosts = args.hosts or ["localhost", "127.0.0.1"]
    if args.tokens:  # refuse before writing anything
        check_new([Path(args.out_dir) / "tokens.yaml"])
    written = make_certificates(args.out_dir, args.clients, hosts=hosts, days=args.days)
    if args.tokens:
        written["tokens.yaml"] = make_tokens(Path(args.out_dir) / "tokens.yaml", args.clients)
    for name in written:
        print(f"wrote {Path(args.out_dir) / name}")
    return 0
