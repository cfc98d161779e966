r"""One fault-tolerant data-parallel step: from every computed row to the aggregated gradient.

Input: a :class:`~.schedule.StepPlan` and its rows (one gradient per ``(worker, batch)``
assignment, faults included). Output: the gradient the optimiser applies.

1. **Detect** (check steps): replicas are compared and the conviction rule of :mod:`.detection`
   runs; convictions take effect in the same step.
2. **Pick one row per sub-batch** :math:`b` from the replicas computed by *unconvicted* workers:
   the owner's row when they agree (or when there is one), the *vouched* one (agreed with its
   other partner this step) when two disagree, none when that is still undecided. On plain steps
   the rows of *suspects* (:mod:`.detection`) are left out until they are convicted or cleared.
   A convicted owner's batch that an unconvicted partner also computed gets the partner's row:
   **replica correction**, exact.
3. **Correct or exclude** sub-batches computed only by convicted workers: with ``correct`` the
   owner's row goes through its :class:`~.correction.RidgeCorrector`,
   :math:`\hat x = a + \beta y + \gamma m` with context :math:`m` the mean of the rows of batches
   owned by unconvicted workers; otherwise (or before the model has a pair) the batch is left out.
4. **Learn** (check steps, with ``correct``): each convicted worker's row :math:`y` for a batch
   whose other replica is trusted (its computer is vouched this step, or :math:`\hat f` workers are
   already convicted) is a training pair :math:`(y, m_{-b}, x)`.
5. **Aggregate** the kept rows with the configured rule (``mean`` by default) and
   :math:`f = \max(\hat f - |C|, 0)`. Without checks (``check_every = 0``) this is plain data
   parallel with that rule over all :math:`w` rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from shieldwall.aggregators import aggregate
from shieldwall.fault_tolerance.correction import CorrectionBank
from shieldwall.fault_tolerance.detection import FaultDetector
from shieldwall.fault_tolerance.schedule import StepPlan

__all__ = ["StepOutcome", "FaultTolerantStep"]

log = logging.getLogger(__name__)

SOURCES = ("owner", "replica", "vouched", "model", "suspect", "excluded")


@dataclass
class StepOutcome:
    """What a step did.

    Attributes:
        aggregate: the ``(d,)`` gradient to apply (zeros when no row was kept).
        sources: per sub-batch, where its row came from: ``owner`` (the owner's own row, checked or
            not), ``replica`` (a convicted owner's batch taken from its unconvicted partner),
            ``vouched`` (two unconvicted replicas disagreed; the vouched one), ``model``
            (corrected), ``suspect`` (a plain step's row of a suspect, left out), ``excluded``.
        new_convicted: workers convicted at this step.
        disagreements: replica pairs that disagreed.
        learned: correction pairs learned.
    """

    aggregate: Tensor
    sources: list[str]
    new_convicted: list[int] = field(default_factory=list)
    disagreements: int = 0
    learned: int = 0

    def counts(self) -> dict[str, int]:
        c = Counter(self.sources)
        return {s: c.get(s, 0) for s in SOURCES}


class FaultTolerantStep:
    """Detection, correction and aggregation state across steps (module docstring).

    Args:
        num_workers: ``w``.
        max_faulty: :math:`\\hat f`.
        correct: correct convicted workers' rows (else exclude them).
        defense: aggregator name; ``defense_params`` its keyword parameters.
        rtol: agreement tolerance.
        prior_strength, decay: correction model settings.
    """

    def __init__(
        self,
        num_workers: int,
        max_faulty: int,
        *,
        correct: bool = False,
        defense: str = "mean",
        defense_params: dict[str, Any] | None = None,
        rtol: float = 1e-5,
        prior_strength: float = 2.0,
        decay: float = 0.98,
    ) -> None:
        self.num_workers = num_workers
        self.max_faulty = max_faulty
        self.correct = correct
        self.defense = defense
        self.defense_params = dict(defense_params or {})
        self.detector = FaultDetector(num_workers, max_faulty, rtol=rtol)
        self.bank: CorrectionBank | None = None
        self._bank_kwargs = {"prior_strength": prior_strength, "decay": decay}

    @property
    def convicted(self) -> dict[int, int]:
        return self.detector.convicted

    def __call__(self, plan: StepPlan, rows: Tensor) -> StepOutcome:
        assign = plan.assignments
        comp, new = None, []
        if plan.check:
            comp, new = self.detector.observe(plan, rows)
            for i in new:
                log.info("step %d: worker %d convicted (disagreed with %s)",
                         plan.step, i, sorted(self.detector.accusers[i]))
        bad = self.detector.is_convicted
        agreed = {} if comp is None else {(a, b): ok for _, a, b, ok in comp.pairs}
        vouched = set() if comp is None else comp.vouched

        reps: dict[int, int] = {}  # batch -> row index of its trusted row
        sources: dict[int, str] = {}
        replicas = plan.replicas()
        suspects = set() if plan.check else self.detector.suspects()
        for b, idx in replicas.items():
            good = [k for k in idx if not bad(assign[k].worker)]
            if not good:
                continue
            if len(good) == 1 and assign[good[0]].worker in suspects:
                sources[b] = "suspect"
                continue
            if len(good) == 1 or agreed.get((good[0], good[1]), False):
                reps[b] = good[0]
                sources[b] = "owner" if assign[good[0]].worker == b else "replica"
                continue
            pick = [k for k in good if assign[k].worker in vouched]
            if len(pick) == 1:
                reps[b], sources[b] = pick[0], "vouched"
            else:
                sources[b] = "excluded"

        ctx_batches = [b for b in reps if not bad(b)]  # owners unconvicted: known on plain steps
        ctx_sum = None
        if self.correct and ctx_batches and self.convicted:
            ctx_sum = rows[[reps[b] for b in ctx_batches]].sum(0)
        kept = [rows[reps[b]] for b in sorted(reps)]

        corrected = 0
        for b, idx in replicas.items():
            if b in reps or b in sources:
                continue
            sources[b] = "excluded"
            if self.correct and ctx_sum is not None and self.bank is not None:
                owner = next((k for k in idx if assign[k].worker == b), idx[0])
                worker = assign[owner].worker
                if self.bank.ready(worker):
                    m = ctx_sum / len(ctx_batches)
                    kept.append(self.bank.predict(worker, rows[owner], m))
                    sources[b] = "model"
                    corrected += 1

        learned = 0
        if plan.check and self.correct and ctx_sum is not None:
            learned = self._learn(plan, rows, reps, vouched, ctx_batches, ctx_sum)

        if kept:
            f_left = max(self.max_faulty - len(self.convicted), 0)
            agg = aggregate(self.defense, torch.stack(kept), f_left, **self.defense_params).vector
        else:
            log.warning("step %d: no sub-batch gradient could be trusted; skipping", plan.step)
            agg = rows.new_zeros(rows.shape[1])
        return StepOutcome(
            aggregate=agg,
            sources=[sources[b] for b in range(plan.num_workers)],
            new_convicted=new,
            disagreements=0 if comp is None else comp.disagreements,
            learned=learned,
        )

    def _learn(
        self,
        plan: StepPlan,
        rows: Tensor,
        reps: dict[int, int],
        vouched: set[int],
        ctx_batches: list[int],
        ctx_sum: Tensor,
    ) -> int:
        """Add (y, m_{-b}, x) pairs for convicted workers' rows with a trusted replica."""
        all_found = len(self.convicted) >= self.max_faulty
        pairs = []
        for k, a in enumerate(plan.assignments):
            if not self.detector.is_convicted(a.worker) or a.batch not in reps:
                continue
            if not (all_found or plan.assignments[reps[a.batch]].worker in vouched):
                continue
            x = rows[reps[a.batch]]
            if a.batch in ctx_batches:
                if len(ctx_batches) < 2:
                    continue
                m = (ctx_sum - x) / (len(ctx_batches) - 1)
            else:
                m = ctx_sum / len(ctx_batches)
            pairs.append((a.worker, rows[k], m, x))
        if pairs:
            if self.bank is None:
                self.bank = CorrectionBank(rows.shape[1], **self._bank_kwargs)
            self.bank.learn(plan.step, pairs)
        return len(pairs)
