"""Checkpoints: the global vector, the algorithm's and defense's state, the round, RNG states.

All of a run's randomness is derived from ``(seed, purpose, round, client)`` (see
:mod:`shieldwall.seeding`), so restoring these is enough for a resumed run to match an
uninterrupted one exactly; the global RNG states are saved too, for code that uses them.
Writes are atomic (temporary file, then rename), so a crash never leaves a torn checkpoint.

Every file is read with ``torch.load(..., weights_only=True)``: tensors and plain containers,
never an arbitrary pickled object, so a run directory or state file handed over by someone
else cannot run code when it is resumed (unpickling a crafted ``checkpoint.pt`` otherwise
executes whatever it names). NumPy's RNG state is therefore stored as plain data; checkpoints
written before that (an ``ndarray``) are still read, with NumPy's array constructor as the one
allowed global.
"""

from __future__ import annotations

import io
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shieldwall.atomic import save_atomic

__all__ = ["save_checkpoint", "load_checkpoint", "load_tensors", "check_archive", "read_torch_file",
           "numpy_rng_state", "set_numpy_rng_state", "error_line", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
_CHECKPOINT_KEYS = frozenset({"round", "params", "algorithm", "rng"})


def save_checkpoint(
    run_dir: str | Path,
    *,
    round: int,
    params: Tensor,
    algorithm_state: dict[str, Any],
    defense_state: dict[str, Any] | None = None,
    attack_state: dict[str, Any] | None = None,
) -> Path:
    """Save the state after ``round`` (the next run resumes at ``round + 1``).

    ``defense_state`` holds what stateful defenses carry across rounds (FoolsGold's history,
    CenteredClip's starting point…), ``attack_state`` what attacks with memory do (mimic's
    chosen target).
    """
    path = Path(run_dir) / CHECKPOINT_NAME
    state = {
        "round": round,
        "params": params.detach().cpu(),
        "algorithm": algorithm_state,
        "defense": defense_state or {},
        "attack": attack_state or {},
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": numpy_rng_state(),
            "python": random.getstate(),
        },
    }
    return save_atomic(state, path)


def numpy_rng_state() -> dict[str, Any]:
    """NumPy's global RNG state as plain data (``np.random.get_state()`` holds an ``ndarray``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"bit_generator": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_numpy_rng_state(state: Any) -> None:
    """Restore :func:`numpy_rng_state`'s dict, or the tuple of a checkpoint from before it."""
    if isinstance(state, dict):
        keys = np.asarray(state["keys"].numpy(), dtype=np.uint32)
        state = (state["bit_generator"], keys, state["pos"], state["has_gauss"],
                 state["cached_gaussian"])
    np.random.set_state(state)


def _legacy_numpy_globals() -> list[Any]:
    """What an ``ndarray`` in an older checkpoint unpickles through: data, never code."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def check_archive(source: str | Path | bytes) -> bool:
    """Refuse a ``torch.save`` zip archive whose entries are compressed or claim more bytes
    than the archive holds. ``torch.save`` never compresses, but ``torch.load`` inflates what it
    is given: a 1 MB message of deflated zeros made it allocate 1 GiB, a 64 MB one would take
    64 GiB. Returns whether ``source`` is a zip archive at all: one that is not is left to the
    caller (``torch.load``'s legacy format reads each storage from the bytes present)."""
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    with archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise ValueError(f"entry {info.filename!r} is compressed; torch.save writes "
                                 "stored entries only")
            if info.file_size > size:
                raise ValueError(f"entry {info.filename!r} claims {info.file_size} bytes of "
                                 f"a {size}-byte archive")
    return True


def load_tensors(source: str | Path | bytes, *, map_location: str | None = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` of a file or, as a peer sent it,
    of bytes; a pickled object other than tensors and plain data is refused with
    :class:`pickle.UnpicklingError` naming it in one line (torch's own message spans a dozen,
    with terminal escapes). Bytes must be ``torch.save``'s zip archive, and only a file may hold
    an older checkpoint's NumPy array. See :func:`check_archive` for what else is refused.
    ``map_location=None`` keeps each tensor on the device it was saved from (a run's own
    checkpoint, resumed where it ran)."""
    from_peer = isinstance(source, bytes)
    if not check_archive(source) and from_peer:
        raise ValueError("not a torch.save archive")
    allowed = [] if from_peer else _legacy_numpy_globals()
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(io.BytesIO(source) if from_peer else source,
                              map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"a pickled {named.group(1)}" if named else "a pickled object"
        raise pickle.UnpicklingError(
            f"it holds {what}, not only tensors and plain data; shieldwall does not run "
            "code from a file it loads") from None


def error_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (torch's errors span many), for one-line errors."""
    return str(exc).splitlines()[0] if str(exc) else "no detail"


def read_torch_file(path: str | Path, what: str = "file") -> Any:
    """:func:`load_tensors` of ``path``; a truncated, corrupt or foreign file is one
    :class:`ValueError` naming it and ``what`` it should be."""
    try:
        return load_tensors(path)
    except Exception as exc:  # truncated, corrupt, foreign pickle: one line naming it
        raise ValueError(f"{what} {str(path)!r} cannot be read ({type(exc).__name__}: "
                         f"{error_line(exc)})") from None


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """Load ``run_dir``'s checkpoint and restore the global RNG states.

    A truncated, corrupt or foreign file is one :class:`ValueError` naming it.
    """
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {str(path)!r} does not exist")
    try:
        state = load_tensors(path, map_location=None)
        if not isinstance(state, dict) or not _CHECKPOINT_KEYS <= set(state):
            raise ValueError("not a shieldwall checkpoint")
        torch.set_rng_state(state["rng"]["torch"])
        set_numpy_rng_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
    except Exception as exc:  # truncated, corrupt or foreign file: one line naming it
        raise ValueError(
            f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: "
            f"{error_line(exc)}); the run cannot be resumed from it"
        ) from None
    return state
