"""BTARD peer state files: kept at chosen steps, and a run's starting point.

The BTARD seed keeps each trainer's averager state at a few steps (``STEPS_TO_SAVE = [450, 950,
2950, 4950]``) and lets the first peer start from such a file (``--initial_state_path``). Here
``btard_args.save_steps`` lists the steps at whose start every peer writes
``RUN_DIR/state_step_<t>.pt``, and ``btard_args.initial_state`` names a file to start from.

A state file is a ``torch.save``'d dict ``{"step", "params", "optimizer", "ledger"}``: the
state *before* step ``step`` runs (``step`` steps taken), the flat parameters, the optimizer's
state and the ledger (bans and silence counts). :func:`read_state` also reads what other runs
leave behind, so that any of them can seed a new run:

* a closed run's ``btard_checkpoint.pt`` (``{"round": r, ...}``: ``r + 1`` steps taken);
* a run's ``final_params.pt`` (a flat parameter tensor; step 0, fresh optimizer);
* a model's ``state_dict`` (name → tensor; flattened in the model's parameter order).

Every problem with the file is one :class:`ValueError` naming it (the caller adds the config
key); a parameter vector of the wrong length is refused, never truncated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from shieldwall.atomic import save_atomic
from shieldwall.checkpoint import read_torch_file

__all__ = ["read_state", "write_state", "state_file", "load_into"]


def state_file(run_dir: Path, step: int) -> Path:
    """Where a peer keeps its state at the start of ``step``."""
    return Path(run_dir) / f"state_step_{step}.pt"


def write_state(path: Path, *, step: int, params: torch.Tensor, optimizer: dict[str, Any],
                ledger: dict[str, Any]) -> Path:
    """Write a state file atomically (a crash leaves the previous file or none)."""
    path = Path(path)
    return save_atomic({"step": int(step), "params": params.detach().cpu().clone(),
                        "optimizer": optimizer, "ledger": ledger}, path)


def _flatten(state: dict[str, Any], model: torch.nn.Module, path: Path) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(f"{str(path)!r} is a state_dict without the model's parameter "
                         f"{missing[0]!r} ({len(missing)} missing)")
    parts = []
    for name, p in model.named_parameters():
        t = state[name]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"{str(path)!r}: parameter {name!r} has shape "
                             f"{tuple(getattr(t, 'shape', ()))}, the model's is {tuple(p.shape)}")
        parts.append(t.detach().reshape(-1).to(p.dtype))
    return torch.cat(parts)


def read_state(path: str | Path, *, dim: int, model: torch.nn.Module | None = None
               ) -> dict[str, Any]:
    """``{"step", "params", "optimizer", "ledger"}`` from any file described in the module
    docstring (``optimizer``/``ledger`` ``None`` when the file has none). ``dim``: the model's
    parameter count (checked); ``model``: to flatten a ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist")
    raw = read_torch_file(path, "state file")
    out: dict[str, Any] = {"step": 0, "optimizer": None, "ledger": None}
    if isinstance(raw, torch.Tensor):
        out["params"] = raw
    elif isinstance(raw, dict) and "params" in raw:
        if "step" in raw:
            out["step"] = raw["step"]
        elif "round" in raw:  # a closed run's checkpoint: its last finished round
            out["step"] = int(raw["round"]) + 1
        out["params"], out["optimizer"] = raw["params"], raw.get("optimizer")
        out["ledger"] = raw.get("ledger")
    elif isinstance(raw, dict) and model is not None:
        out["params"] = _flatten(raw, model, path)
    else:
        raise ValueError(f"{str(path)!r} is not a BTARD state, a checkpoint, a parameter "
                         f"vector or a model state_dict")
    params = out["params"]
    if not isinstance(params, torch.Tensor) or params.dim() != 1 or params.numel() != dim:
        shape = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(f"{str(path)!r} holds parameters of shape {shape}; this model has "
                         f"{dim} parameters")
    if not params.is_floating_point() or not bool(torch.isfinite(params).all()):
        raise ValueError(f"{str(path)!r} holds non-finite or non-float parameters")
    if type(out["step"]) is not int or out["step"] < 0:
        raise ValueError(f"{str(path)!r} has step {out['step']!r}, not an integer >= 0")
    for key in ("optimizer", "ledger"):
        if out[key] is not None and not isinstance(out[key], dict):
            raise ValueError(f"{str(path)!r}: {key} is not a dict")
    return out


def load_into(state: dict[str, Any], peers: Any, ledger: Any = None) -> int:
    """Put a state (as :func:`read_state` returns, or a swarm peer serves) into ``peers``
    (each gets the parameters and, where the state has it, the optimizer state) and ``ledger``
    (where given and the state has one); returns the step to run next."""
    for peer in peers:
        peer.params = state["params"].clone()
        if state.get("optimizer") is not None:
            peer.stepper.load_state_dict(state["optimizer"])
    if ledger is not None and state.get("ledger") is not None:
        ledger.load_state_dict(state["ledger"])
    return int(state["step"])
