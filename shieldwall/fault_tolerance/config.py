"""The ``ddp`` run's settings: one dataclass, filled from YAML (``ddp_args``) and the command line.

A YAML file holds the same names as the command-line flags (``-`` or ``_`` alike)::

    ddp_args:
      dataset: mnist
      data_dir: /work/shared/datasets
      workers: 16
      faulty: [0, 1, 2, 3, 4]
      correct: true
      check_every: 4
      tb: runs/ddp-mnist

A file without a ``ddp_args`` section is read as that mapping itself. Command-line flags that are
given override the file; unknown names are an error that names the closest valid one.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shieldwall.config.loader import coerce_value, read_yaml
from shieldwall.config.ranges import at_least_one, positive
from shieldwall.registry import closest, normalize_name

__all__ = ["DDPConfig", "load_ddp_config"]


@dataclass(kw_only=True)
class DDPConfig:
    dataset: str = "digits"
    """Data set name (``digits`` is embedded; ``mnist`` reads ``data_dir``)."""
    data_dir: str | None = None
    """Folder holding the data set (or its parent)."""
    arch: str = "mlp"
    """Model name from the model registry (no batch-norm)."""
    workers: int = 16
    """Data-parallel workers ``w``; the global batch is split into ``w`` sub-batches."""
    faulty: list[int] = field(default_factory=list)
    """Ids of the workers that are faulty (simulated)."""
    max_faulty: int | None = None
    """The detector's bound on faulty workers (default: ``len(faulty)``)."""
    fault: str = "trivial_noise"
    """Update attack a faulty worker applies to every gradient it computes."""
    fault_sigma: float = 1.0
    """``sigma`` of the fault when it takes one (noise standard deviation)."""
    fault_scale: float | None = None
    """``scale`` of the fault when it takes one (``sign_flip``: :math:`y = -\\text{scale}\\,x`)."""
    fault_params: dict[str, Any] = field(default_factory=dict)
    """Further keyword parameters of the fault (e.g. ``{scale: 2}`` for sign_flip)."""
    check_every: int = 4
    """A redundant check step every this many steps (``0``: no redundancy, no detection)."""
    tolerance: float = 1e-5
    """Relative L2 distance under which two replicas agree."""
    correct: bool = False
    """Correct convicted workers (replica, else regression model) instead of excluding them."""
    prior_strength: float = 2.0
    """Correction model: pseudo-pairs of shrinkage toward the pooled fit."""
    decay: float = 0.98
    """Correction model: discount of older training pairs."""
    defense: str = "mean"
    """Aggregator for the sub-batch rows kept (``f`` = faulty workers not yet convicted, lowered
    to the rule's largest valid ``f`` when it has too few rows; docs/fault_tolerance.md)."""
    defense_params: dict[str, Any] = field(default_factory=dict)
    """Keyword parameters of the aggregator (e.g. ``{robust_threshold: 4}``)."""
    epoch: int = 3
    """Passes over the training set (3, as in the fault-tolerant DDP simulator's ``-e``)."""
    max_steps: int | None = None
    """Stop after this many steps (quick runs, benchmarks)."""
    global_batch_size: int = 512
    """Samples per step over all workers (a multiple of ``workers``; 512 as the simulator's
    ``-gb``)."""
    lr: float = 0.1
    """SGD learning rate."""
    momentum: float = 0.0
    """SGD momentum."""
    seed: int = 0
    """Seed of the initial model, batches, schedule and faults."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``."""
    proc: int = 0
    """``0`` or ``1``: this process (the batched simulator; the simulator's default ``--proc``
    is 1); ``N ≥ 2``: spawn N gloo processes on 127.0.0.1."""
    eval_every: int = 0
    """Evaluate every this many steps (``0``: at the end of each epoch)."""
    checkpoint_every: int = 100
    """With a run directory (``tb``): keep ``checkpoint.pt`` every this many steps and at the
    end, for ``--resume`` (``0``: at the end only)."""
    tb: str | None = None
    """Run directory for TensorBoard event files and ``metrics.jsonl``."""
    data_coll_path: str | None = None
    """Folder receiving the correction model's training pairs, one shard per check step
    (:mod:`~shieldwall.fault_tolerance.datacoll`); implies ``correct``. Must not exist yet or be
    empty (runs are never overwritten)."""
    quiet: bool = False
    """``shieldwall ddp`` prints the simulator's start-up echo and per-step lines (worker → batch
    map, ``[AGG]``/``[CORRECTION]``, ``EP: …`` progress) unless this is set (``-q``)."""

    def __post_init__(self) -> None:
        self.faulty = sorted({int(i) for i in self.faulty})
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {self.global_batch_size}")
        if self.global_batch_size % self.workers:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of "
                f"workers {self.workers}: every worker needs an equal sub-batch"
            )
        bad = [i for i in self.faulty if not 0 <= i < self.workers]
        if bad:
            raise ValueError(f"faulty worker ids {bad} are outside 0..{self.workers - 1}")
        if self.epoch < 1:
            raise ValueError(f"epoch must be >= 1, got {self.epoch}")
        self._check_ranges()
        if self.data_coll_path is not None:
            self.correct = True  # as in the simulator: collecting needs the correction path
        if not isinstance(self.defense_params, dict) or not isinstance(self.fault_params, dict):
            raise ValueError("fault_params and defense_params must be mappings")

    def _check_ranges(self) -> None:
        """Each number's allowed range, named by its setting (``--lr`` is ``lr``)."""
        for key in ("lr", "decay"):
            positive(key, getattr(self, key))
        for key in ("momentum", "tolerance", "fault_sigma", "prior_strength", "check_every",
                    "eval_every", "proc", "checkpoint_every", "max_faulty"):
            positive(key, getattr(self, key), allow_zero=True)
        at_least_one("max_steps", self.max_steps)
        if self.decay > 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")

    @property
    def bound(self) -> int:
        """The detector's :math:`\\hat f`."""
        return len(self.faulty) if self.max_faulty is None else int(self.max_faulty)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(DDPConfig)}
ALIASES = {"worker": "workers"}
"""The fault-tolerant DDP simulator's argument names that differ from ours."""


def _canonical_keys(mapping: dict[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, value in mapping.items():
        name = normalize_name(key)
        name = ALIASES.get(name, name)
        if name not in FIELDS:
            hint = closest(name, sorted(FIELDS))
            extra = f" (did you mean {hint!r}?)" if hint else ""
            raise ValueError(f"{where}: unknown ddp setting {key!r}{extra}")
        out[name] = value
    return out


def load_ddp_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> DDPConfig:
    """Settings from the YAML file ``path`` (optional) with ``overrides`` (non-``None`` values)."""
    values: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
        section = data.get("ddp_args", data)
        if not isinstance(section, dict):
            raise ValueError(f"{path}: ddp_args must be a mapping")
        values.update(_canonical_keys(section, str(path)))
    if overrides:
        values.update(_canonical_keys({k: v for k, v in overrides.items() if v is not None},
                                      "command line"))
    if isinstance(values.get("faulty"), (int, str)):
        values["faulty"] = str(values["faulty"]).replace(",", " ").split()
    return DDPConfig(**_typed(values))


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """Each value checked against its field's type (``ddp_args.workers must be an integer``)."""
    hints = typing.get_type_hints(DDPConfig)
    fields = {f.name: f for f in dataclasses.fields(DDPConfig)}
    return {key: coerce_value("ddp_args", key, value, hints[key], fields[key])
            for key, value in values.items()}
