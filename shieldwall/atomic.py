"""Whole-or-nothing file writes: a temporary file beside the target, synced, then renamed over it.

A crash, a kill, a full disk or a power cut leaves the previous file (or none), never a torn one,
and a reader in another process sees the old content or the new, nothing in between. Every file
a run keeps (checkpoints, summaries, configs, metrics rewrites, collected data indexes) is written
through here.

Below every layer: it imports only the standard library and torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["write_text_atomic", "save_atomic"]


def _replace(path: str | Path, write: Callable[[Path], object]) -> Path:
    path = Path(path)
    # One temporary name per process: two processes writing the same file never share one.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all; returns ``path``."""
    return _replace(path, lambda tmp: tmp.write_text(text))


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` whole or not at all; returns ``path``."""
    return _replace(path, lambda tmp: torch.save(obj, tmp))
