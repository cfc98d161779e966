"""Placements: which worker computes the gradient of which part ("file") of the batch.

A placement is a bipartite graph between K workers and F files. Redundancy defenses (DETOX,
Rajput et al. 2019; ByzShield, Konstantinidis & Ramamoorthy, MLSys 2021) need it to be
bi-regular: every file is on exactly r workers (the *replication*) and every worker holds the same
number l of files (the *load*), so that counting edges gives ``K · l = F · r``. The parameter
server votes per file over its r copies (:mod:`.vote`), then aggregates the F voted gradients.

The placement is stored twice: ``files_of_worker[k]`` (sorted file ids of worker k) and the dense
``(K, F)`` bool ``incidence`` tensor (its biadjacency matrix). The vote's gather tables
``replica_workers`` and ``replica_slots`` (both ``(F, r)``) say, for each file, which workers hold
it and where the file sits in each worker's list.

Builders are registered in :data:`PLACEMENTS` as ``fn(num_workers, replication, **params)``;
:func:`build_placement` calls one by name with clear errors. User placements come from JSON
(``{"files_of_worker": [[...], ...]}``) or CSV files (one row of file ids per worker, or a
``worker,file`` edge list with that header) through :func:`load_placement`.
"""

from __future__ import annotations

import csv
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shieldwall.redundancy.symmetry import Symmetry
from shieldwall.registry import Registry

__all__ = [
    "Placement",
    "PlacementError",
    "PLACEMENTS",
    "build_placement",
    "load_placement",
    "majority_threshold",
]

#: Placement builders ``fn(num_workers: int, replication: int, **params) -> Placement``.
PLACEMENTS: Registry[Callable[..., Placement]] = Registry("placement")


class PlacementError(ValueError):
    """A placement is not valid, or cannot be built for the requested sizes."""


def majority_threshold(replication: int) -> int:
    """Smallest strict majority of ``replication`` copies: ``⌊r/2⌋ + 1`` (= ⌈(r+1)/2⌉)."""
    return int(replication) // 2 + 1


@dataclass
class Placement:
    """K workers × F files, every file on ``replication`` workers, every worker ``load`` files.

    Attributes:
        files_of_worker: ``files_of_worker[k]`` = file ids computed by worker k (kept sorted).
        num_files: F (default: the largest file id + 1).
        name: the scheme that built it (``"mols"``, ``"detox"``, …, ``"custom"``).
        params: the scheme's parameters (for reports and JSON).
        orbit_reps: worker ids such that every worker is mapped onto one of them by a
            symmetry of the placement (a relabelling of workers and files that keeps the
            graph); lets the exact c_max search assume an adversary set contains one of them.
            ``None`` = unknown (no symmetry used).
        classes: parallel classes, if the builder knows them: lists of worker ids splitting
            the workers so that each class holds every file exactly once (one replica per
            class). Lets :mod:`.resolvable` search class by class; ``None`` = unknown.
        symmetry: automorphisms known for the classes (:class:`~.symmetry.Symmetry`), used
            only to prune that search; ``None`` = unknown.
    """

    files_of_worker: list[list[int]]
    num_files: int | None = None
    name: str = "custom"
    params: dict[str, Any] = field(default_factory=dict)
    orbit_reps: tuple[int, ...] | None = None
    classes: list[list[int]] | None = None
    symmetry: Symmetry | None = field(default=None, repr=False)
    incidence: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rows = []
        for k, files in enumerate(self.files_of_worker):
            try:
                row = [int(f) for f in files]
            except (TypeError, ValueError) as exc:
                raise PlacementError(f"worker {k}: file ids must be integers ({exc})") from None
            rows.append(sorted(row))
        self.files_of_worker = rows
        if self.num_files is None:
            self.num_files = 1 + max((max(r) for r in rows if r), default=-1)
        self.num_files = int(self.num_files)
        self.validate()
        inc = torch.zeros(len(rows), self.num_files, dtype=torch.bool)
        for k, row in enumerate(rows):
            inc[k, row] = True
        self.incidence = inc
        if self.orbit_reps is not None:
            self.orbit_reps = tuple(int(w) for w in self.orbit_reps)
            if not all(0 <= w < len(rows) for w in self.orbit_reps):
                raise PlacementError(f"orbit_reps {self.orbit_reps} are not worker ids")
        if self.classes is not None:
            self.classes = [sorted(int(w) for w in c) for c in self.classes]
            self._check_classes()
        if self.symmetry is not None:
            if self.classes is None:
                raise PlacementError("a symmetry needs the parallel classes")
            try:
                self.symmetry.check(rows, self.classes)
            except ValueError as exc:
                raise PlacementError(str(exc)) from None

    # ------------------------------------------------------------------ sizes
    @property
    def num_workers(self) -> int:
        return len(self.files_of_worker)

    @property
    def load(self) -> int:
        """l: files per worker."""
        return len(self.files_of_worker[0])

    @property
    def replication(self) -> int:
        """r: workers per file."""
        return self.num_workers * self.load // self.num_files

    @property
    def majority(self) -> int:
        """r′ = ⌊r/2⌋ + 1 copies decide a file's vote."""
        return majority_threshold(self.replication)

    def validate(self) -> None:
        """Raise :class:`PlacementError` unless every file is on exactly r workers and every
        worker holds the same number of distinct files."""
        rows, num_files = self.files_of_worker, self.num_files
        if not rows:
            raise PlacementError("a placement needs at least one worker")
        if num_files is None or num_files < 1:
            raise PlacementError("a placement needs at least one file")
        counts = [0] * num_files
        for k, row in enumerate(rows):
            if not row:
                raise PlacementError(f"worker {k} has no file")
            if len(set(row)) != len(row):
                raise PlacementError(f"worker {k} lists a file twice: {row}")
            for f in row:
                if not 0 <= f < num_files:
                    raise PlacementError(
                        f"worker {k} has file {f}, outside 0..{num_files - 1}"
                    )
                counts[f] += 1
        loads = {len(row) for row in rows}
        if len(loads) != 1:
            by_load = {n: [k for k, r in enumerate(rows) if len(r) == n] for n in sorted(loads)}
            raise PlacementError(
                "every worker must hold the same number of files; found loads "
                + ", ".join(f"{n} (workers {ws[:8]})" for n, ws in by_load.items())
            )
        missing = [f for f, c in enumerate(counts) if c == 0]
        if missing:
            raise PlacementError(f"files on no worker: {missing[:20]}")
        reps = set(counts)
        if len(reps) != 1:
            r = max(set(counts), key=counts.count)
            odd = [f for f, c in enumerate(counts) if c != r]
            raise PlacementError(
                f"every file must be on the same number of workers; most are on {r}, but files "
                f"{odd[:20]} are on {[counts[f] for f in odd[:20]]}"
            )

    def _check_classes(self) -> None:
        classes = self.classes or []
        if sorted(w for c in classes for w in c) != list(range(self.num_workers)):
            raise PlacementError("parallel classes must split the worker ids 0 … K − 1")
        for i, cls in enumerate(classes):
            files = sorted(f for w in cls for f in self.files_of_worker[w])
            if files != list(range(self.num_files)):
                raise PlacementError(f"parallel class {i} does not hold every file exactly once")

    # ----------------------------------------------------------- look-ups
    def workers_of_file(self, file: int) -> list[int]:
        """Worker ids holding ``file`` (increasing)."""
        if not 0 <= file < self.num_files:
            raise IndexError(f"file {file} outside 0..{self.num_files - 1}")
        return torch.nonzero(self.incidence[:, file]).flatten().tolist()

    @property
    def replica_workers(self) -> Tensor:
        """``(F, r)`` long: the workers of each file, increasing."""
        w = torch.nonzero(self.incidence.t())[:, 1]
        return w.reshape(self.num_files, self.replication)

    @property
    def replica_slots(self) -> Tensor:
        """``(F, r)`` long: position of the file in each of its workers' ``files_of_worker``."""
        slot = torch.cumsum(self.incidence.long(), dim=1) - 1  # (K, F): rank of f within k
        workers = self.replica_workers
        files = torch.arange(self.num_files).unsqueeze(1).expand_as(workers)
        return slot[workers, files]

    def summary(self) -> str:
        return (
            f"{self.name}: K={self.num_workers} workers, F={self.num_files} files, "
            f"r={self.replication} workers/file, l={self.load} files/worker"
        )

    # ------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_workers": self.num_workers,
            "num_files": self.num_files,
            "replication": self.replication,
            "load": self.load,
            "params": dict(self.params),
            "files_of_worker": [list(r) for r in self.files_of_worker],
            **({"classes": self.classes} if self.classes is not None else {}),
        }

    def to_json(self, path: str | Path | None = None, *, indent: int | None = None) -> str:
        """JSON text (written to ``path`` too when given); :func:`load_placement` reads it."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "placement") -> Placement:
        if isinstance(data, list):
            data = {"files_of_worker": data}
        if not isinstance(data, dict) or "files_of_worker" not in data:
            raise PlacementError(
                f"{source}: expected a JSON object with 'files_of_worker' (a list of lists of "
                "file ids, one per worker) or such a list itself"
            )
        rows = data["files_of_worker"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise PlacementError(f"{source}: 'files_of_worker' must be a list of lists")
        try:
            p = cls(
                rows,
                num_files=data.get("num_files"),
                name=str(data.get("name", "custom")),
                params=dict(data.get("params", {})),
                classes=data.get("classes"),
            )
        except PlacementError as exc:
            raise PlacementError(f"{source}: {exc}") from None
        for key, value in (("num_workers", p.num_workers), ("replication", p.replication),
                           ("load", p.load)):
            if key in data and int(data[key]) != value:
                raise PlacementError(f"{source}: says {key}={data[key]} but the lists give {value}")
        return p

    @classmethod
    def from_file(cls, path: str | Path) -> Placement:
        return load_placement(path)


def load_placement(path: str | Path) -> Placement:
    """Read a placement from JSON (``.json``) or CSV (anything else), validated."""
    path = Path(path)
    if not path.is_file():
        raise PlacementError(f"placement file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlacementError(f"{path}: not valid JSON ({exc})") from None
        return Placement.from_dict(data, source=str(path))
    return _from_csv(text, str(path))


def _from_csv(text: str, source: str) -> Placement:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = [[c.strip() for c in row if c.strip()] for row in csv.reader(lines)]
    if not rows:
        raise PlacementError(f"{source}: empty placement file")

    def ints(cells: Sequence[str], line: int) -> list[int]:
        try:
            return [int(c) for c in cells]
        except ValueError:
            raise PlacementError(
                f"{source}: row {line}: file ids must be integers: {cells}"
            ) from None

    if [c.lower() for c in rows[0]] == ["worker", "file"]:
        edges = [ints(r, i + 2) for i, r in enumerate(rows[1:])]
        bad = [i + 2 for i, e in enumerate(edges) if len(e) != 2]
        if bad:
            raise PlacementError(f"{source}: rows {bad[:10]} must be 'worker,file'")
        num_workers = 1 + max(w for w, _ in edges)
        files: list[list[int]] = [[] for _ in range(num_workers)]
        for w, f in edges:
            if w < 0:
                raise PlacementError(f"{source}: negative worker id {w}")
            files[w].append(f)
    else:
        files = [ints(r, i + 1) for i, r in enumerate(rows)]
    try:
        return Placement(files, name="custom", params={"source": source})
    except PlacementError as exc:
        raise PlacementError(f"{source}: {exc}") from None


def build_placement(scheme: str, num_workers: int, replication: int, **params: Any) -> Placement:
    """Build the registered placement ``scheme`` (or an alias), with clear errors."""
    entry = PLACEMENTS.entry(scheme)
    accepted = entry.param_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise PlacementError(
            f"placement {entry.name!r} takes no parameter {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}"
        )
    sig = inspect.signature(entry.obj)
    sig.bind(num_workers, replication, **params)
    return entry.obj(num_workers, replication, **params)


def check_sizes(scheme: str, num_workers: int, replication: int) -> tuple[int, int]:
    """Common argument checks of the builders: positive integers."""
    try:
        k, r = int(num_workers), int(replication)
    except (TypeError, ValueError):
        raise PlacementError(
            f"{scheme}: num_workers and replication must be integers, got "
            f"{num_workers!r} and {replication!r}"
        ) from None
    if k < 1 or r < 1:
        raise PlacementError(
            f"{scheme}: need num_workers ≥ 1 and replication ≥ 1, got K={k}, r={r}"
        )
    return k, r
