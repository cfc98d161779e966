r"""The redundancy schedule: which worker computes which sub-batch at each step.

A global batch of :math:`B` samples is split into :math:`w` sub-batches of :math:`B/w`, one per
worker. Worker :math:`i` always computes its *own* sub-batch :math:`i`. On a **check step**
(every ``check_every``-th step, :math:`t \equiv 0 \pmod{\text{check\_every}}`) every sub-batch
:math:`b` is also computed by a second worker, its *partner*

.. math::
    \operatorname{partner}_t(b) = (b + s_t) \bmod w, \qquad s_t \in \{1, \dots, \lfloor w/2
    \rfloor\},

so on a check step worker :math:`i` computes :math:`\{i,\ (i - s_t) \bmod w\}` and is compared
with two workers, :math:`i + s_t` (on its own batch) and :math:`i - s_t` (on the batch it
recomputes); for :math:`s_t = w/2` these coincide. Each cycle of :math:`\lfloor w/2 \rfloor`
check steps runs through a fresh seeded random permutation of :math:`1..\lfloor (w-1)/2 \rfloor`,
followed by :math:`w/2` when :math:`w` is even (the shift that brings one partner, not two), so
that

* within one cycle of :math:`\lfloor w/2 \rfloor` check steps every worker meets all :math:`w-1`
  others exactly once (:math:`\pm s` covers every non-zero residue), i.e. after
  :math:`k \le \lfloor (w-1)/2 \rfloor` check steps of a cycle a worker has met :math:`2k`
  distinct partners (:math:`w - 1` for a full cycle) — what the conviction rule of
  :mod:`.detection` needs;
* which batch is replicated where is not predictable from the step number alone (an attacker that
  knew the pairing could behave only when watched; a faulty accelerator does not care).

Cost. A plain data-parallel step computes :math:`w` sub-batch gradients, a check step
:math:`2w`. Over :math:`T` steps with :math:`C = \lceil T / \text{check\_every} \rceil` check steps
the extra compute is :math:`C/T \approx 1/\text{check\_every}` of plain data parallel, i.e. a share
:math:`C / (T + C) \approx 1/(\text{check\_every} + 1)` of everything computed is redundant
(:meth:`RedundancySchedule.overhead`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from shieldwall.seeding import torch_generator

__all__ = ["Assignment", "StepPlan", "RedundancySchedule"]


@dataclass(frozen=True)
class Assignment:
    """Worker ``worker`` computes the gradient of sub-batch ``batch``."""

    worker: int
    batch: int


@dataclass(frozen=True)
class StepPlan:
    """One step's work.

    Attributes:
        step: global step (0-based).
        num_workers: ``w`` (also the number of sub-batches).
        shift: ``s_t`` on a check step, ``0`` otherwise.
        assignments: the owners ``(i, i)`` for ``i < w`` first, then on a check step the replicas
            ``((b + s_t) mod w, b)`` for ``b < w``. Rows of gradients travel in this order.
    """

    step: int
    num_workers: int
    shift: int
    assignments: tuple[Assignment, ...]

    @property
    def check(self) -> bool:
        return self.shift > 0

    def worker_map(self) -> dict[int, list[int]]:
        """worker → the sub-batches it computes this step (own batch first)."""
        out: dict[int, list[int]] = {i: [] for i in range(self.num_workers)}
        for a in self.assignments:
            out[a.worker].append(a.batch)
        return out

    def replicas(self) -> dict[int, list[int]]:
        """sub-batch → indices into :attr:`assignments` of its replicas (owner first)."""
        out: dict[int, list[int]] = {b: [] for b in range(self.num_workers)}
        for k, a in enumerate(self.assignments):
            out[a.batch].append(k)
        return out

    def rows_of(self, workers: set[int] | range) -> list[int]:
        """Indices of the assignments computed by ``workers`` (in assignment order)."""
        return [k for k, a in enumerate(self.assignments) if a.worker in workers]

    def format(self) -> str:
        """``step 8 check s=3: w0→[0,13] w1→[1,14] …`` (the debug line)."""
        kind = f"check s={self.shift}" if self.check else "plain"
        body = " ".join(f"w{i}→{bs}" for i, bs in self.worker_map().items())
        return f"step {self.step} {kind}: {body}".replace(", ", ",")


class RedundancySchedule:
    """Seeded pairing schedule (see the module docstring).

    Args:
        num_workers: ``w`` ≥ 1 (≥ 2 when checking).
        check_every: a check step every this many steps; ``0`` disables redundancy.
        seed: the run's seed (the shift permutations are drawn from it).
    """

    def __init__(self, num_workers: int, check_every: int, seed: int = 0) -> None:
        if num_workers < 1:
            raise ValueError(f"need at least one worker, got {num_workers}")
        if check_every < 0:
            raise ValueError(f"check_every must be >= 0 (0 disables checks), got {check_every}")
        if check_every > 0 and num_workers < 2:
            raise ValueError("redundant checks need at least 2 workers (or --check-every 0)")
        self.num_workers = num_workers
        self.check_every = check_every
        self.seed = seed
        self.num_shifts = num_workers // 2
        self._cycles: dict[int, list[int]] = {}

    def is_check(self, step: int) -> bool:
        return self.check_every > 0 and step % self.check_every == 0

    def shift(self, step: int) -> int:
        """``s_t`` for a check step, ``0`` for a plain one."""
        if not self.is_check(step):
            return 0
        index = step // self.check_every
        cycle, pos = divmod(index, self.num_shifts)
        order = self._cycles.get(cycle)
        if order is None:
            gen = torch_generator(self.seed, "ft-shift", cycle)
            half = (self.num_workers - 1) // 2
            order = (torch.randperm(half, generator=gen) + 1).tolist()
            if self.num_workers % 2 == 0:
                order.append(self.num_workers // 2)
            self._cycles = {cycle: order}  # keep only the current cycle
        return order[pos]

    def plan(self, step: int) -> StepPlan:
        w = self.num_workers
        s = self.shift(step)
        owners = [Assignment(i, i) for i in range(w)]
        replicas = [Assignment((b + s) % w, b) for b in range(w)] if s else []
        return StepPlan(step, w, s, tuple(owners + replicas))

    def num_checks(self, num_steps: int) -> int:
        """Check steps among steps ``0 .. num_steps - 1``."""
        if self.check_every == 0 or num_steps <= 0:
            return 0
        return math.ceil(num_steps / self.check_every)

    def overhead(self, num_steps: int) -> dict[str, float]:
        """Compute of ``num_steps`` steps, in sub-batch gradients.

        Returns ``plain`` (``w·T``), ``computed`` (``w·(T + C)``), ``extra`` (``C/T``: the fraction
        added to plain data parallel) and ``redundant_share`` (``C/(T + C)``).
        """
        checks = self.num_checks(num_steps)
        plain = self.num_workers * num_steps
        computed = plain + self.num_workers * checks
        return {
            "plain": float(plain),
            "computed": float(computed),
            "extra": checks / num_steps if num_steps else 0.0,
            "redundant_share": (computed - plain) / computed if computed else 0.0,
        }
