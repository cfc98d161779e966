r"""``--data_coll_path DIR``: the correction model's training data, written as it is learned.

The fault-tolerant DDP simulator's ``--data_coll_path FILE.pkl`` pickles ten ``(faulty, true)``
gradient pairs per faulty worker and exits. Here training goes on, and every check step that
yields correction pairs (:mod:`.engine`, step 4) writes one shard, so the whole run's data can be
studied or a different correction model refitted offline.

**Layout** of ``DIR`` (created; an existing non-empty folder is refused, runs are never
overwritten)::

    meta.json                 {"format": "shieldwall-ddp-datacoll", "version": 1, "dim": d,
                               "shards": [...], "config": {...the run's settings...}}
    step-000008.npz           one shard per check step with pairs
    step-000012.npz
    ...

A shard is an uncompressed NumPy ``.npz`` (readable without torch) holding, for its ``k`` pairs:

=========  ===============  ==========================================================
key        shape / dtype    meaning
=========  ===============  ==========================================================
``step``   ``()`` int64     the training step
``worker`` ``(k,)`` int64   the convicted worker whose row it is
``batch``  ``(k,)`` int64   the sub-batch the row was computed for
``y``      ``(k, d)`` f32   the worker's (faulty) gradient: the model's input
``m``      ``(k, d)`` f32   the context: mean of the trusted rows of the other sub-batches
``x``      ``(k, d)`` f32   the true gradient (an honest replica): the model's target
=========  ===============  ==========================================================

so that :math:`\hat x = a + \beta y + \gamma m` (per coordinate) is what the run fits, and the
simulator's pairs are ``(y, x)``. Size: :math:`3 k d` floats per shard (MNIST MLP, 5 convicted
workers: 12 MB a check step).

**Reading**::

    from shieldwall.fault_tolerance import datacoll
    data = datacoll.load("runs/coll")        # every shard, concatenated
    data.y.shape, data.worker, data.meta["config"]["fault"]
    inputs, targets = data.seed_format(worker=0)   # the simulator's {'input', 'target'} lists
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from shieldwall.atomic import write_text_atomic

__all__ = ["CollectedPairs", "DataCollector", "load", "FORMAT"]

FORMAT = "shieldwall-ddp-datacoll"
VERSION = 1
KEYS = ("step", "worker", "batch", "y", "m", "x")


class DataCollector:
    """Writes one ``.npz`` shard per step with pairs into ``path`` (module docstring).

    Args:
        path: the folder (created; refused when it exists and is not empty).
        dim: gradient length ``d``.
        config: the run's settings, stored in ``meta.json``.
    """

    def __init__(self, path: str | Path, dim: int, config: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise ValueError(
                f"data_coll_path {str(self.path)!r} exists and is not an empty folder; choose a "
                "new one (runs are never overwritten)"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.config = dict(config or {})
        self.shards: list[str] = []
        self.num_pairs = 0
        self._write_meta()

    @classmethod
    def reopen(cls, path: str | Path, dim: int, before_step: int) -> DataCollector:
        """The collection of a resumed run: its shards of steps before ``before_step`` (later
        ones are forgotten and rewritten as the run reaches them again)."""
        self = cls.__new__(cls)
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{str(meta_file)!r} not found: the run's data collection "
                                    "is gone; cannot resume it")
        try:
            meta = json.loads(meta_file.read_text())
            shards = [str(n) for n in meta["shards"]]
            steps = [int(n.removeprefix("step-").removesuffix(".npz")) for n in shards]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{str(meta_file)!r} is not a --data_coll_path index") from None
        if meta.get("format") != FORMAT or int(meta.get("dim", -1)) != int(dim):
            raise ValueError(f"{str(meta_file)!r} is not this run's collection (format "
                             f"{meta.get('format')!r}, dim {meta.get('dim')!r}, expected {dim})")
        self.dim = int(dim)
        self.config = dict(meta.get("config") or {})
        self.shards = [n for n, t in zip(shards, steps, strict=True) if t < before_step]
        self.num_pairs = 0
        for name in self.shards:
            with np.load(self.path / name, allow_pickle=False) as shard:
                self.num_pairs += int(shard["worker"].shape[0])
        self._write_meta()
        return self

    def _write_meta(self) -> None:
        meta = {"format": FORMAT, "version": VERSION, "dim": self.dim,
                "num_pairs": self.num_pairs, "shards": self.shards, "config": self.config}
        write_text_atomic(self.path / "meta.json", json.dumps(meta, indent=1, default=str))

    def write(self, step: int, pairs: list[tuple[int, int, Tensor, Tensor, Tensor]]) -> None:
        """Store step ``step``'s pairs ``(worker, batch, y, m, x)`` (nothing when empty)."""
        if not pairs:
            return

        def stack(j: int) -> np.ndarray:
            return np.stack([p[j].detach().float().cpu().numpy() for p in pairs])

        name = f"step-{step:06d}.npz"
        np.savez(
            self.path / name,
            step=np.int64(step),
            worker=np.array([p[0] for p in pairs], dtype=np.int64),
            batch=np.array([p[1] for p in pairs], dtype=np.int64),
            y=stack(2), m=stack(3), x=stack(4),
        )
        self.shards.append(name)
        self.num_pairs += len(pairs)
        self._write_meta()


@dataclass
class CollectedPairs:
    """Every pair of a collection, concatenated in step order (arrays as in a shard, with
    ``step`` repeated per pair)."""

    step: np.ndarray
    worker: np.ndarray
    batch: np.ndarray
    y: np.ndarray
    m: np.ndarray
    x: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.worker.shape[0])

    def seed_format(self, worker: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The simulator's ``gradient_dataset`` lists for ``worker``: ``(input, target)``, i.e.
        its faulty rows and the true ones."""
        sel = np.flatnonzero(self.worker == worker)
        return [self.y[i] for i in sel], [self.x[i] for i in sel]


def load(path: str | Path) -> CollectedPairs:
    """Read a ``--data_coll_path`` folder (module docstring); checks the format and shapes."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{str(meta_file)!r} not found: not a --data_coll_path folder")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{str(meta_file)!r}: expected format {FORMAT!r} version {VERSION}, got "
                         f"{meta.get('format')!r} version {meta.get('version')!r}")
    dim = int(meta["dim"])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    for name in meta["shards"]:
        if "/" in name or "\\" in name or not name.endswith(".npz"):
            raise ValueError(f"{str(meta_file)!r}: bad shard name {name!r}")
        with np.load(path / name, allow_pickle=False) as shard:
            k = int(shard["worker"].shape[0])
            for key in ("y", "m", "x"):
                if shard[key].shape != (k, dim):
                    raise ValueError(f"{name}: {key} has shape {shard[key].shape}, "
                                     f"expected {(k, dim)}")
                parts[key].append(shard[key])
            parts["step"].append(np.full(k, int(shard["step"]), dtype=np.int64))
            parts["worker"].append(shard["worker"])
            parts["batch"].append(shard["batch"])
    if not meta["shards"]:
        empty = {k: np.zeros((0, dim) if k in ("y", "m", "x") else 0,
                             dtype=np.float32 if k in ("y", "m", "x") else np.int64) for k in KEYS}
        return CollectedPairs(**empty, meta=meta)
    return CollectedPairs(**{k: np.concatenate(v) for k, v in parts.items()}, meta=meta)
