r"""Detecting faulty workers from disagreeing replicas.

**Comparison.** Two replicas :math:`a, b` of one sub-batch *agree* when

.. math::
    \lVert a - b \rVert_2 \le \text{rtol} \cdot \max(\lVert a \rVert_2, \lVert b \rVert_2)
    + \text{atol}

(``rtol`` defaults to 1e-5: honest replicas are bitwise equal in the simulator and equal up to
kernel rounding across processes; the norms are taken in the rows' dtype, whose rounding is far
below ``rtol`` for float32; norms that overflow it are taken again in float64, so that two
different huge rows never agree by an infinite scale). Rows with NaN/Inf never agree.

**What a disagreement tells.** Honest workers compute the same function of the same data, so an
honest pair always agrees; a disagreement means *at least one* of the two is faulty, never which.
A worker agreeing with someone proves nothing either when faulty workers can collude (two
sign-flippers agree with each other).

**Conviction rule** (sound whenever at most ``max_faulty`` = :math:`\hat f` workers are faulty).
Let :math:`C` be the workers convicted so far and :math:`D_i` the distinct partners :math:`i` has
ever disagreed with. Worker :math:`i \notin C` is convicted when

.. math::
    \bigl| D_i \setminus C \bigr| \;\ge\; \hat f - |C| + 1 .

Proof: an honest :math:`i` only disagrees with faulty partners, and at most
:math:`\hat f - |C|` faulty workers are outside :math:`C` (induction: everything convicted so far is
faulty). The rule is re-applied until nothing changes, and convictions stop once
:math:`|C| = \hat f` (everyone else is then honest). For :math:`\hat f = 1` it is the textbook
"disagrees with two distinct partners"; in general a worker needs :math:`\hat f + 1` distinct
accusers, which the rotating pairs of :mod:`.schedule` supply at two new partners per check step.

Detection time: a worker that disagrees with *every* partner (independent noise) is convicted
after :math:`\lceil(\hat f + 1)/2\rceil` check steps; one that agrees with its :math:`f - 1` fellow
faulty workers (a deterministic colluding attack) after at most
:math:`\lceil(\hat f + f)/2\rceil`, i.e. :math:`\le \hat f` check steps, as long as
:math:`\hat f + f \le w - 1` (honest majority). With fewer check steps the elimination term
:math:`-|C|` usually makes it faster.

**Vouching.** A worker that agrees with a partner at a step is *vouched* for that step: for
independent faults (noise, broken hardware) agreement means both results are correct. Vouching
never convicts; it picks a replica when two unconvicted replicas disagree, chooses training pairs
for the correction model, and defines *suspects*.

**Suspects** (provisional, not a conviction): an unconvicted worker with an open accusation that
agreed with *no* partner at its latest check step. Until it is convicted (or vouched again) its
rows are left out of plain steps, and of a check step (whose comparisons already count) where one
would be its batch's only trusted row, which bounds the damage in the few steps before conviction at
the price of its sub-batch. At most :math:`\hat f - |C|` workers are suspects (the most accused
first). An honest worker becomes one only when both its partners at a check step were faulty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from shieldwall.fault_tolerance.schedule import StepPlan

__all__ = ["Comparison", "FaultDetector", "compare_replicas"]

log = logging.getLogger(__name__)


@dataclass
class Comparison:
    """One step's replica comparisons.

    Attributes:
        pairs: ``(batch, row_a, row_b, agree)`` with row indices into the plan's assignments.
        vouched: workers that agreed with at least one partner this step.
    """

    pairs: list[tuple[int, int, int, bool]] = field(default_factory=list)
    vouched: set[int] = field(default_factory=set)

    @property
    def disagreements(self) -> int:
        return sum(1 for *_, ok in self.pairs if not ok)


def _distance_and_scale(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`\lVert a_j - b_j \rVert_2` and :math:`\max(\lVert a_j \rVert_2,
    \lVert b_j \rVert_2)` per row pair (float64 where the rows' dtype overflowed).

    Computed in the rows' dtype, then again in float64 for the pairs where either came out
    non-finite: finite float32 rows of entries above ~1e19 overflow a float32 norm, and an
    infinite scale would make any two such rows agree (:math:`\text{rtol} \cdot \infty`), e.g.
    two faulty workers' different huge rows. In float64 no float32 row overflows, so only rows
    with NaN/Inf (or float64 rows beyond ~1e154) keep a non-finite distance."""
    def norms(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        scale = torch.maximum(torch.linalg.vector_norm(a, dim=1),
                              torch.linalg.vector_norm(b, dim=1))
        return torch.linalg.vector_norm(a - b, dim=1), scale

    dist, scale = norms(a, b)
    redo = (~(torch.isfinite(dist) & torch.isfinite(scale))).nonzero().flatten()
    if redo.numel():
        dist, scale = dist.double(), scale.double()
        dist[redo], scale[redo] = norms(a[redo].double(), b[redo].double())
    return dist, scale


def compare_replicas(
    plan: StepPlan, rows: Tensor, *, rtol: float = 1e-5, atol: float = 0.0
) -> Comparison:
    """Compare every pair of replicas of every sub-batch of ``plan`` (one batched pass)."""
    triples = []
    for batch, idx in plan.replicas().items():
        for p in range(len(idx)):
            for q in range(p + 1, len(idx)):
                triples.append((batch, idx[p], idx[q]))
    out = Comparison()
    if not triples:
        return out
    ia = torch.tensor([t[1] for t in triples], device=rows.device)
    ib = torch.tensor([t[2] for t in triples], device=rows.device)
    dist, scale = _distance_and_scale(rows[ia], rows[ib])
    # a non-finite distance (NaN/Inf rows, or an overflow between huge rows) never agrees
    agree = (torch.isfinite(dist) & (dist <= rtol * scale + atol)).tolist()
    for (batch, ra, rb), ok in zip(triples, agree):
        out.pairs.append((batch, ra, rb, bool(ok)))
        if ok:
            out.vouched.update((plan.assignments[ra].worker, plan.assignments[rb].worker))
    return out


class FaultDetector:
    """Keeps the accusation graph and applies the conviction rule (module docstring).

    Args:
        num_workers: ``w``.
        max_faulty: :math:`\\hat f`, the most faulty workers the run assumes.
        rtol, atol: agreement tolerance of :func:`compare_replicas`.
    """

    def __init__(
        self, num_workers: int, max_faulty: int, *, rtol: float = 1e-5, atol: float = 0.0
    ) -> None:
        if not 0 <= max_faulty < num_workers:
            raise ValueError(f"max_faulty must be in [0, {num_workers - 1}], got {max_faulty}")
        self.num_workers = num_workers
        self.max_faulty = max_faulty
        self.rtol, self.atol = rtol, atol
        self.accusers: list[set[int]] = [set() for _ in range(num_workers)]
        self.convicted: dict[int, int] = {}
        """worker → step of conviction."""
        self.num_disagreements = 0
        self.num_comparisons = 0
        self.vouched_last: dict[int, bool] = {}
        """worker → whether it agreed with some partner at its latest check step."""
        self._warned = False

    def state_dict(self) -> dict[str, Any]:
        """The accusation graph, the convictions and the counters (everything :meth:`observe`
        carries from one check step to the next)."""
        return {"num_workers": self.num_workers, "max_faulty": self.max_faulty,
                "accusers": [sorted(a) for a in self.accusers],
                "convicted": dict(self.convicted), "vouched_last": dict(self.vouched_last),
                "num_disagreements": self.num_disagreements,
                "num_comparisons": self.num_comparisons, "warned": self._warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; another ``w`` or :math:`\\hat f` is a
        ``ValueError`` (the conviction rule's soundness depends on both)."""
        saved = (state["num_workers"], state["max_faulty"])
        if saved != (self.num_workers, self.max_faulty):
            raise ValueError(f"detector state is for w={saved[0]}, max_faulty={saved[1]}; this "
                             f"run has w={self.num_workers}, max_faulty={self.max_faulty}")
        self.accusers = [set(a) for a in state["accusers"]]
        self.convicted = {int(w): int(s) for w, s in state["convicted"].items()}
        self.vouched_last = {int(w): bool(v) for w, v in state["vouched_last"].items()}
        self.num_disagreements = int(state["num_disagreements"])
        self.num_comparisons = int(state["num_comparisons"])
        self._warned = bool(state["warned"])

    def is_convicted(self, worker: int) -> bool:
        return worker in self.convicted

    def observe(self, plan: StepPlan, rows: Tensor) -> tuple[Comparison, list[int]]:
        """Compare ``plan``'s replicas in ``rows``; returns the comparison and new convictions."""
        comp = compare_replicas(plan, rows, rtol=self.rtol, atol=self.atol)
        for _, ra, rb, ok in comp.pairs:
            self.num_comparisons += 1
            if ok:
                continue
            self.num_disagreements += 1
            wa, wb = plan.assignments[ra].worker, plan.assignments[rb].worker
            if wa != wb:
                self.accusers[wa].add(wb)
                self.accusers[wb].add(wa)
        for a in plan.assignments:
            self.vouched_last[a.worker] = a.worker in comp.vouched
        return comp, self.update(plan.step)

    def suspects(self) -> set[int]:
        """Unconvicted, accused, unvouched at the latest check (module docstring)."""
        budget = self.max_faulty - len(self.convicted)
        cands = [
            i for i in range(self.num_workers)
            if i not in self.convicted and self.open_accusations(i) > 0
            and not self.vouched_last.get(i, True)
        ]
        cands.sort(key=lambda i: (-self.open_accusations(i), i))
        return set(cands[: max(budget, 0)])

    def open_accusations(self, worker: int) -> int:
        """``|D_i \\ C|``: distinct unconvicted partners that ``worker`` disagreed with."""
        return sum(1 for j in self.accusers[worker] if j not in self.convicted)

    def update(self, step: int) -> list[int]:
        """Apply the conviction rule to a fixpoint; returns the workers convicted now."""
        new: list[int] = []
        changed = True
        while changed and len(self.convicted) < self.max_faulty:
            changed = False
            for i in range(self.num_workers):
                if i in self.convicted or len(self.convicted) >= self.max_faulty:
                    continue
                if self.open_accusations(i) >= self.max_faulty - len(self.convicted) + 1:
                    self.convicted[i] = step
                    new.append(i)
                    changed = True
        if len(self.convicted) >= self.max_faulty and not self._warned:
            stray = [i for i in range(self.num_workers) if i not in self.convicted
                     and self.open_accusations(i) > 0]
            if stray:
                self._warned = True
                log.warning(
                    "unconvicted workers %s still disagree with each other although %d (= "
                    "max_faulty) workers are convicted: are more workers faulty than assumed?",
                    stray, len(self.convicted),
                )
        return new
