"""Checkpoints: the global vector, the algorithm's and defense's state, the round, RNG states.

All of a run's randomness is derived from ``(seed, purpose, round, client)`` (see
:mod:`shieldwall.seeding`), so restoring these is enough for a resumed run to match an
uninterrupted one exactly; the global RNG states are saved too, for code that uses them.
Writes are atomic (temporary file, then rename), so a crash never leaves a torn checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shieldwall.atomic import save_atomic

__all__ = ["save_checkpoint", "load_checkpoint", "read_torch_file", "CHECKPOINT_NAME"]

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
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
    }
    return save_atomic(state, path)


def read_torch_file(path: str | Path, what: str = "file") -> Any:
    """``torch.load`` of ``path`` onto the CPU (tensors and plain containers only); a truncated,
    corrupt or foreign file is one :class:`ValueError` naming it and ``what`` it should be."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, foreign pickle: one line naming it
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise ValueError(f"{what} {str(path)!r} cannot be read ({type(exc).__name__}: {detail})"
                         ) from None


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """Load ``run_dir``'s checkpoint and restore the global RNG states.

    A truncated, corrupt or foreign file is one :class:`ValueError` naming it.
    """
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {str(path)!r} does not exist")
    try:
        state = torch.load(path, weights_only=False)
        if not isinstance(state, dict) or not _CHECKPOINT_KEYS <= set(state):
            raise ValueError("not a shieldwall checkpoint")
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
    except Exception as exc:  # truncated, corrupt or foreign file: one line naming it
        raise ValueError(
            f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); the run cannot be "
            "resumed from it"
        ) from None
    return state
