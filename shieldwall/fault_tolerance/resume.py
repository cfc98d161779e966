"""``shieldwall ddp --resume RUN_DIR``: continue a run from its last checkpoint.

A run with a run directory (``-tb DIR``) keeps there

* ``ddp_config.yaml``: its settings (``ddp_args``), written when it starts;
* ``checkpoint.pt``: every ``checkpoint_every`` steps and at the end, written atomically —
  the parameters and momentum, the engine's whole state (accusations, convictions, correction
  models, the rule's state, counters; :meth:`~.engine.FaultTolerantStep.state_dict`), the
  row counts, timings and evaluations so far, and the next step.

Everything else a step uses (batches, schedule, faults, dropout) is seeded by the step number,
so a resumed run continues exactly as the uninterrupted one (a test checks the parameters bit
for bit). ``metrics.jsonl`` keeps its records before the checkpoint's step; TensorBoard drops
later events; a ``--data_coll_path`` collection keeps its shards before it.

Resuming may change only what does not change the experiment: ``quiet``, ``device``, ``proc``,
``max_steps``, ``epoch``, ``eval_every``, ``checkpoint_every``; anything else is refused in one
line naming the keys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from shieldwall.atomic import save_atomic, write_text_atomic
from shieldwall.checkpoint import read_torch_file
from shieldwall.fault_tolerance.config import FIELDS, DDPConfig, load_ddp_config

__all__ = ["CHECKPOINT", "CONFIG_FILE", "CONTINUABLE", "write_config", "resume_config",
           "save_checkpoint", "load_checkpoint"]

CHECKPOINT = "checkpoint.pt"
CONFIG_FILE = "ddp_config.yaml"
FORMAT = "shieldwall-ddp-checkpoint"
VERSION = 1
CONTINUABLE = frozenset({"quiet", "device", "proc", "max_steps", "epoch", "eval_every",
                         "checkpoint_every", "tb"})
"""Settings a resumed run may change (they change neither the steps' arithmetic nor order)."""
_KEYS = ("step", "params", "velocity", "engine", "totals", "timing", "evals", "elapsed")


def write_config(run_dir: str | Path, cfg: DDPConfig) -> None:
    """``RUN_DIR/ddp_config.yaml``: the run's settings, for ``--resume``."""
    write_text_atomic(Path(run_dir) / CONFIG_FILE,
                      yaml.safe_dump({"ddp_args": cfg.to_dict()}, sort_keys=False))


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> DDPConfig:
    """The recorded settings of ``run_dir`` with ``overrides`` (flags given with ``--resume``);
    ValueError naming every key that would make it another experiment."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"--resume {str(run_dir)!r}: no {CONFIG_FILE} there; a shieldwall ddp "
                         "run keeps one in its run directory (-tb DIR)")
    recorded = load_ddp_config(path)
    cfg = load_ddp_config(path, {k: v for k, v in (overrides or {}).items() if k != "tb"})
    changed = [k for k in sorted(FIELDS - CONTINUABLE) if getattr(cfg, k) != getattr(recorded, k)]
    if changed:
        what = ", ".join(f"{k} ({getattr(recorded, k)!r} -> {getattr(cfg, k)!r})"
                         for k in changed)
        raise ValueError(f"--resume {str(run_dir)!r}: {what} would make it another run; only "
                         f"{', '.join(sorted(CONTINUABLE - {'tb'}))} may change when resuming")
    return dataclasses.replace(cfg, tb=str(run_dir))


def save_checkpoint(run_dir: str | Path, **state: Any) -> None:
    """``RUN_DIR/checkpoint.pt``, whole or not at all (keys: see the module docstring)."""
    missing = set(_KEYS) - set(state)
    if missing:
        raise ValueError(f"checkpoint state lacks {sorted(missing)}")
    save_atomic({"format": FORMAT, "version": VERSION, **state}, Path(run_dir) / CHECKPOINT)


def load_checkpoint(run_dir: str | Path, dim: int) -> dict[str, Any]:
    """``RUN_DIR/checkpoint.pt``, checked: one line naming the file when it is missing,
    unreadable, foreign, or of another model size than ``dim``."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {str(path)!r} does not exist "
                                "(the run stopped before its first one)")
    state = read_torch_file(path, "ddp checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT or not set(_KEYS) <= set(
            state):
        raise ValueError(f"ddp checkpoint {str(path)!r} is not a shieldwall ddp checkpoint")
    if state.get("version") != VERSION:
        raise ValueError(f"ddp checkpoint {str(path)!r} has version {state.get('version')!r}; "
                         f"this shieldwall reads version {VERSION}")
    if tuple(state["params"].shape) != (dim,):
        raise ValueError(f"ddp checkpoint {str(path)!r} holds {state['params'].numel()} "
                         f"parameters; the model has {dim}")
    return state
