"""The ``shieldwall`` command: sub-commands live in :mod:`shieldwall.commands`, one per module.

Errors a user can fix (a bad config, a missing data folder, an unknown name) print one line
``shieldwall: error: …`` and exit 2, never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

import shieldwall
import shieldwall.commands
from shieldwall.algorithms.server import RoundFailedError
from shieldwall.runtime.torch_dist import WorkerLostError

__all__ = ["main", "build_parser", "quiet_stdout", "USER_ERRORS", "FILE_ERRNOS"]

# Exceptions that describe a problem with what the user asked for.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError)
# OSErrors a user can fix: a full or read-only disk, no permission, a path that is a file…
FILE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                         errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                         errno.ENAMETOOLONG})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shieldwall",
        description="Byzantine-robust distributed and federated training.",
    )
    parser.add_argument("--version", action="version", version=shieldwall.__version__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(shieldwall.commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"shieldwall.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except USER_ERRORS as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"shieldwall: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # ``shieldwall check … | head``: the reader left; stop quietly
        quiet_stdout()
        return 141  # 128 + SIGPIPE, as a shell tool killed by the signal reports
    except OSError as exc:
        if args.debug or exc.errno not in FILE_ERRNOS:
            raise
        where = f": {str(exc.filename)!r}" if exc.filename else ""
        print(f"shieldwall: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except (WorkerLostError, RoundFailedError) as exc:  # on_worker_loss: stop; no usable row
        if args.debug:
            raise
        print(f"shieldwall: stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("shieldwall: interrupted", file=sys.stderr)
        return 130


def quiet_stdout() -> None:
    """Point stdout at ``/dev/null`` after its reader closed the pipe.

    Python flushes stdout again at exit; with the pipe gone that flush would raise once more and
    print a traceback of its own.
    """
    try:
        target = sys.stdout.fileno()
    except (OSError, ValueError):  # not a file (a captured or replaced stdout): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, target)
    finally:
        os.close(devnull)


if __name__ == "__main__":
    raise SystemExit(main())
