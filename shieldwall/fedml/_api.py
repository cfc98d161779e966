"""Errors of the FedML drop-in: an API shieldwall does not have, a bad data set list or model.

Each is reported the way every shieldwall error is, in one line and exit status 2, also from a
user's own script: :func:`install_excepthook` (called on import of :mod:`shieldwall.fedml`)
prints ``shieldwall: error: …`` for these errors and for config errors, and leaves every other
exception to Python's usual traceback.
"""

from __future__ import annotations

import sys
from types import TracebackType

from shieldwall.config.loader import ConfigError
from shieldwall.registry import closest

__all__ = ["UnsupportedAPIError", "missing", "install_excepthook"]


class UnsupportedAPIError(ImportError):
    """A FedML name shieldwall's drop-in does not provide (an ``ImportError``, so that
    ``from shieldwall.fedml import X`` keeps its message)."""


def missing(module: str, name: str, available: list[str]) -> UnsupportedAPIError:
    """The error for ``module.name``: what is missing and the nearest name that exists."""
    hint = closest(name, available)
    return UnsupportedAPIError(
        f"{module}.{name} is a FedML API that shieldwall does not provide"
        + (f"; the nearest is {module}.{hint}" if hint else "")
        + f" (available: {', '.join(sorted(available))}; see docs/fedml_compat.md)"
    )


_ONE_LINE = (ConfigError, UnsupportedAPIError, FileNotFoundError)


def _hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, _ONE_LINE):
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"shieldwall: error: {text}", file=sys.stderr)
        sys.exit(2)
    _previous(kind, exc, tb)


_previous = sys.excepthook


def install_excepthook() -> None:
    """Print our own errors in one line with exit 2 (FedML scripts have no ``main()`` wrapper)."""
    global _previous
    if sys.excepthook is not _hook:
        _previous = sys.excepthook
        sys.excepthook = _hook
