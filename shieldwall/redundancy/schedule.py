"""What ByzShield's training script does around each step: epochs, lr decay, model backups.

ByzShield's ``run_pytorch.sh`` (github.com/kkonstantinidis/ByzShield, ``distributed_nn.py``)
trains for ``--epochs`` passes over a shuffled training set cut into batches (``drop_last``),
stopping at ``--max-steps``; decays the learning rate stepwise; and writes the model every
``--eval-freq`` steps to ``--train-dir`` for a separate evaluator
(``distributed_evaluator.py``). Here (pure functions, no processes):

* **Epochs** (:func:`draw_epoch_files`): with ``redundancy_args.epochs`` set, step t belongs to
  epoch e = ⌊t/S⌋ with S = ⌊N/(F·b)⌋ steps per epoch; epoch e is one permutation of the N
  training samples drawn from ``(seed, "epochperm", e)``, and step t takes its slice
  ``[(t mod S)·F·b, (t mod S + 1)·F·b)``, cut into F files of b samples. Every sample is used at
  most once per epoch; the run lasts min(comm_round, epochs·S) steps (:func:`total_steps`).
* **Learning-rate decay** (:func:`lr_at`): at 1-based step i the server's rate is
  lr·gamma^⌊i/lr_step⌋ (ByzShield's master sets it when i mod lr_step = 0 and keeps it).
* **Backups** (:class:`Backups`): after 1-based step i with i mod eval_freq = 0 the model's
  ``state_dict`` goes to ``train_dir/model_step_<i>`` (the evaluator's file name), with a
  ``backup.yaml`` naming the data set and model so that ``shieldwall evaluate`` can score them.
* **Divergence** (:func:`diverged`): a non-finite loss, aggregate or parameter vector.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from shieldwall.atomic import save_atomic, write_text_atomic
from shieldwall.seeding import torch_generator

__all__ = [
    "steps_per_epoch",
    "total_steps",
    "epoch_indices",
    "draw_epoch_files",
    "lr_at",
    "Backups",
    "BACKUP_PREFIX",
    "BACKUP_META",
    "diverged",
]

log = logging.getLogger(__name__)

BACKUP_PREFIX = "model_step_"
BACKUP_META = "backup.yaml"


def steps_per_epoch(num_samples: int, num_files: int, per_file: int) -> int:
    """S = ⌊N/(F·b)⌋ (the last partial batch is dropped, as ``drop_last=True``)."""
    steps = num_samples // (num_files * per_file)
    if steps < 1:
        raise ValueError(
            f"a step needs F·b = {num_files}·{per_file} = {num_files * per_file} samples but the "
            f"training set has {num_samples}; lower redundancy_args.files_batch_size"
        )
    return steps


def total_steps(comm_round: int, epochs: int | None, per_epoch: int) -> int:
    """min(comm_round, epochs·S); ``epochs=None`` leaves ``comm_round``."""
    if epochs is None:
        return comm_round
    if epochs < 1:
        raise ValueError(f"redundancy_args.epochs must be ≥ 1, got {epochs}")
    return min(comm_round, epochs * per_epoch)


def epoch_indices(num_samples: int, num_files: int, per_file: int, seed: int, step: int) -> Tensor:
    """``(F, b)`` sample indices of ``step`` under epoch sampling (module docstring)."""
    per_epoch = steps_per_epoch(num_samples, num_files, per_file)
    epoch, within = divmod(step, per_epoch)
    perm = torch.randperm(num_samples, generator=torch_generator(seed, "epochperm", epoch))
    need = num_files * per_file
    return perm[within * need : (within + 1) * need].reshape(num_files, per_file)


def draw_epoch_files(
    train_x: Tensor, train_y: Tensor, num_files: int, per_file: int, seed: int, step: int
) -> tuple[Tensor, Tensor]:
    """The step's F files of b samples under epoch sampling."""
    idx = epoch_indices(int(train_y.shape[0]), num_files, per_file, seed, step)
    idx = idx.reshape(-1).to(train_y.device)
    return (
        train_x[idx].reshape(num_files, per_file, *train_x.shape[1:]),
        train_y[idx].reshape(num_files, per_file),
    )


def lr_at(step: int, lr: float, gamma: float, lr_step: int | None) -> float:
    """Learning rate of 0-based ``step``: lr·gamma^⌊(step + 1)/lr_step⌋ (ByzShield's decay)."""
    if lr_step is None or gamma == 1.0:
        return lr
    if lr_step < 1:
        raise ValueError(f"redundancy_args.lr_step must be ≥ 1, got {lr_step}")
    return lr * gamma ** ((step + 1) // lr_step)


def diverged(*values: Tensor | float) -> bool:
    """True when any value (a float or tensor) is NaN or infinite."""
    for v in values:
        if isinstance(v, Tensor):
            if not bool(torch.isfinite(v).all()):
                return True
        elif not math.isfinite(float(v)):
            return True
    return False


class Backups:
    """Model backups every ``eval_freq`` steps into ``train_dir`` (module docstring).

    Args:
        train_dir: the folder (created); a fresh run refuses one that already holds backups.
        eval_freq: period in steps.
        model: the module whose ``state_dict`` is saved; ``load(params)`` fills it.
        meta: written to ``backup.yaml`` (data set, model, config path).
        resuming: a resumed run may add to its own backups.
    """

    def __init__(
        self, train_dir: str | Path, eval_freq: int, model: nn.Module, load: Any,
        meta: dict[str, Any], *, resuming: bool = False,
    ) -> None:
        if eval_freq < 1:
            raise ValueError(f"redundancy_args.eval_freq must be ≥ 1, got {eval_freq}")
        self.dir = Path(train_dir).expanduser()
        self.eval_freq = int(eval_freq)
        self.model = model
        self.load = load
        self.dir.mkdir(parents=True, exist_ok=True)
        old = sorted(self.dir.glob(f"{BACKUP_PREFIX}*"))
        if old and not resuming:
            raise ValueError(
                f"redundancy_args.train_dir {self.dir} already holds {len(old)} model backups "
                f"({old[0].name}, …); choose an empty folder (runs are never overwritten)"
            )
        write_text_atomic(self.dir / BACKUP_META, yaml.safe_dump(meta, sort_keys=False))

    def path(self, step_1based: int) -> Path:
        return self.dir / f"{BACKUP_PREFIX}{step_1based}"

    def after_step(self, step: int, params: Tensor) -> Path | None:
        """Save the model after 0-based ``step`` when step + 1 is a multiple of ``eval_freq``."""
        i = step + 1
        if i % self.eval_freq:
            return None
        self.load(params)
        path = self.path(i)
        # Atomic: the evaluator never sees a half-written file.
        return save_atomic({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, path)
