r"""One fault-tolerant data-parallel step: from every computed row to the aggregated gradient.

Input: a :class:`~.schedule.StepPlan` and its rows (one gradient per ``(worker, batch)``
assignment, faults included). Output: the gradient the optimiser applies.

1. **Detect** (check steps): replicas are compared and the conviction rule of :mod:`.detection`
   runs; convictions take effect in the same step.
2. **Pick one row per sub-batch** :math:`b` from the replicas computed by *unconvicted* workers
   (a row with a NaN/Inf is never trusted: it is left out like a convicted worker's):
   the owner's row when they agree (or when there is one), the *vouched* one (agreed with its
   other partner this step) when two disagree, none when that is still undecided. A row that is
   its batch's only unconvicted one is left out when its worker is a *suspect*
   (:mod:`.detection`; on a check step, as of this step's comparisons) until that worker is
   convicted or cleared. A convicted owner's batch that an unconvicted partner (not a suspect)
   also computed gets the partner's row: **replica correction**, exact.
3. **Correct or exclude** sub-batches computed only by convicted workers, or whose other replica
   came from a suspect: with ``correct`` the
   owner's row goes through its :class:`~.correction.RidgeCorrector`,
   :math:`\hat x = a + \beta y + \gamma m` with context :math:`m` the mean of the rows of batches
   owned by unconvicted workers, bounded by :func:`~.correction.bound_correction` (norm at most
   :math:`R = \kappa \max_b \lVert x_b \rVert` over the step's trusted rows, :math:`m` when
   not finite); otherwise (or before the model has a pair) the batch is left out.
4. **Learn** (check steps, with ``correct``): each convicted worker's row :math:`y` for a batch
   whose other replica is trusted (its computer is vouched this step, or :math:`\hat f` workers are
   already convicted) is a training pair :math:`(y, m_{-b}, x)`.
5. **Aggregate** the rows kept in 2–3 with the configured rule (``mean`` by default). Convicted
   workers' own rows never reach the rule (they were replaced or left out), nor do suspects' rows
   on plain steps. The rule is told :math:`f = \max(\hat f - |C|, 0)`, the number of faulty
   workers that may still be unconvicted (on a plain step each worker contributes at most one
   row, so at most that many rows can be wrong). Corrected rows count as trusted: they replace
   rows of *identified* workers and the safeguard keeps them no worse than exclusion. When the
   rule cannot run with that many rows and that :math:`f` (its registered ``min_n``: e.g.
   median needs :math:`n \ge 2f + 1`, Krum :math:`n \ge 2f + 3`, Bulyan :math:`n \ge 4f + 3`)
   — typically the first check steps of 5 faulty workers of 16, where disagreeing replicas
   leave about 10 rows with :math:`f = 5` — :func:`rule_f` lowers :math:`f` to the largest value
   the rule accepts for those rows (its own breakdown point), logged once and counted in
   :attr:`FaultTolerantStep.f_lowered`; with fewer rows than the rule needs even at
   :math:`f = 0` the coordinate-wise median is used for that step. Stateful rules (FoolsGold)
   keep their state per sub-batch slot (its owner's id; one row per slot and step) through
   :class:`~shieldwall.algorithms.defense.Defense`.
   Without checks (``check_every = 0``) this is plain data parallel with that rule over all
   :math:`w` finite rows. An aggregate that is still not finite (finite rows whose mean
   overflows) is replaced by zeros: the step is skipped (:attr:`FaultTolerantStep.nonfinite_steps`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS
from shieldwall.aggregators.base import finite_row_mask
from shieldwall.algorithms.defense import Defense, check_params
from shieldwall.algorithms.params import convert_params
from shieldwall.fault_tolerance.correction import NORM_MARGIN, CorrectionBank, all_finite
from shieldwall.fault_tolerance.detection import FaultDetector
from shieldwall.fault_tolerance.schedule import StepPlan

__all__ = ["StepOutcome", "FaultTolerantStep", "rule_f"]

log = logging.getLogger(__name__)

SOURCES = ("owner", "replica", "vouched", "model", "suspect", "excluded")
FALLBACK_RULE = "median"


def rule_f(name: str, num_rows: int, f: int, params: dict[str, Any] | None = None) -> int:
    """The largest :math:`f' \\le f` with which the aggregator ``name`` runs on ``num_rows`` rows;
    ``-1`` when it cannot run even with :math:`f' = 0`.

    A candidate must meet the rule's registered ``min_n(f', **params)`` and pass the rule's own
    checks on a ``(num_rows, 1)`` probe (parameters such as trimmed mean's ``b >= f`` are checked
    only there); results are cached per ``(rule, params, n, f)``. Rules without a bound on ``f``
    (``mean``) get ``f`` unchanged.

    >>> [rule_f(rule, 10, 5) for rule in ("median", "krum", "bulyan", "mean")]
    [4, 3, 1, 5]
    """
    entry = AGGREGATORS.entry(name)
    min_n = entry.meta.get("min_n")
    kw = dict(params or {})
    key = (entry.name, repr(sorted(kw.items())), num_rows, f)
    if key in _RULE_F:
        return _RULE_F[key]
    found = -1
    for cand in range(max(f, 0), -1, -1):
        if min_n is not None and num_rows < min_n(cand, **kw):
            continue
        try:
            Defense(entry.name, kw)(torch.zeros(num_rows, 1), cand, commit=False)
        except ValueError:
            continue
        found = cand
        break
    _RULE_F[key] = found
    return found


_RULE_F: dict[tuple[str, str, int, int], int] = {}


def _build_rule(name: str, params: dict[str, Any], num_workers: int) -> Defense:
    """The aggregator ``name`` with ``params``, checked now: an unknown or missing parameter is
    a ``ValueError`` naming it, not an error at the first step."""
    entry = AGGREGATORS.entry(name)
    check_params(entry, params, "defense_params")
    rule = Defense(entry.name, convert_params(entry, params, "defense_params"))
    try:
        rule(torch.zeros(num_workers, 1), 0, commit=False)
    except TypeError as exc:
        raise ValueError(f"defense {entry.name!r}: {exc}; set it with --defense-param KEY=VALUE "
                         "(ddp_args.defense_params)") from None
    return rule


@dataclass
class StepOutcome:
    """What a step did.

    Attributes:
        aggregate: the ``(d,)`` gradient to apply (zeros when no row was kept or it was not
            finite).
        sources: per sub-batch, where its row came from: ``owner`` (the owner's own row, checked or
            not), ``replica`` (a convicted owner's batch taken from its unconvicted partner),
            ``vouched`` (two unconvicted replicas disagreed; the vouched one), ``model``
            (corrected), ``suspect`` (a plain step's row of a suspect, left out), ``excluded``.
        new_convicted: workers convicted at this step.
        disagreements: replica pairs that disagreed.
        learned: correction pairs learned.
        num_rows: rows the aggregation rule saw.
        f: faulty workers possibly not yet convicted, :math:`\\max(\\hat f - |C|, 0)`.
        f_rule: the ``f`` the rule ran with (:func:`rule_f`; ``-1``: the median fallback).
        pairs: the correction pairs learned, ``(worker, batch, y, m, x)`` (``--data_coll_path``).
    """

    aggregate: Tensor
    sources: list[str]
    new_convicted: list[int] = field(default_factory=list)
    disagreements: int = 0
    learned: int = 0
    num_rows: int = 0
    f: int = 0
    f_rule: int = 0
    pairs: list[tuple[int, int, Tensor, Tensor, Tensor]] = field(default_factory=list)

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
        self.rule = _build_rule(defense, dict(defense_params or {}), num_workers)
        self.f_lowered = 0
        """Steps at which :func:`rule_f` lowered the rule's ``f`` (or fell back to the median)."""
        self.nonfinite_steps = 0
        """Steps skipped because the rule's aggregate had a NaN/Inf."""
        self.detector = FaultDetector(num_workers, max_faulty, rtol=rtol)
        self.bank: CorrectionBank | None = None
        self._bank_kwargs = {"prior_strength": prior_strength, "decay": decay}

    @property
    def convicted(self) -> dict[int, int]:
        return self.detector.convicted

    def state_dict(self) -> dict[str, Any]:
        """Everything a step carries to the next: detector, correction models, the rule's state
        (stateful rules) and the counters; ``torch.save``-able with ``weights_only``. A run
        restored from it continues exactly as the uninterrupted one."""
        return {"detector": self.detector.state_dict(),
                "bank": None if self.bank is None else self.bank.state_dict(),
                "dim": None if self.bank is None else self.bank.dim,
                "rule": self.rule.state_dict(), "f_lowered": self.f_lowered,
                "nonfinite_steps": self.nonfinite_steps}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict`'s output into an engine built with the same settings;
        ``device`` is where the correction models live."""
        self.detector.load_state_dict(state["detector"])
        self.bank = None
        if state["bank"] is not None:
            self.bank = CorrectionBank(int(state["dim"]), **self._bank_kwargs)
            self.bank.load_state_dict(state["bank"], device)
        self.rule.load_state_dict(state["rule"])
        self.f_lowered = int(state["f_lowered"])
        self.nonfinite_steps = int(state["nonfinite_steps"])

    def __call__(self, plan: StepPlan, rows: Tensor) -> StepOutcome:
        assign = plan.assignments
        comp, new = None, []
        if plan.check:
            comp, new = self.detector.observe(plan, rows)
            for i in new:
                log.info("step %d: worker %d convicted (disagreed with %s)",
                         plan.step, i, sorted(self.detector.accusers[i]))
        bad = self.detector.is_convicted
        finite = finite_row_mask(rows)
        broken = set() if finite is None else set((~finite).nonzero().flatten().tolist())
        agreed = {} if comp is None else {(a, b): ok for _, a, b, ok in comp.pairs}
        vouched = set() if comp is None else comp.vouched

        reps: dict[int, int] = {}  # batch -> row index of its trusted row
        sources: dict[int, str] = {}
        replicas = plan.replicas()
        suspects = self.detector.suspects()  # on a check step: as of this step's comparisons
        for b, idx in replicas.items():
            good = [k for k in idx if not bad(assign[k].worker) and k not in broken]
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
        kept_ids = sorted(reps)
        kept = [rows[reps[b]] for b in kept_ids]
        kept_slots = list(kept_ids)  # sub-batch ids: one row each, unique within a step

        corrected = 0
        # R of correction.bound_correction: NORM_MARGIN × the largest norm of a trusted row
        max_norm = math.inf if ctx_sum is None else NORM_MARGIN * float(
            torch.linalg.vector_norm(rows[list(reps.values())], dim=1, dtype=torch.float64).max()
        )
        for b, idx in replicas.items():
            if b in reps or (b in sources and not bad(b)):
                continue
            sources.setdefault(b, "excluded")
            if self.correct and ctx_sum is not None and self.bank is not None:
                owner = next((k for k in idx if assign[k].worker == b), idx[0])
                worker = assign[owner].worker
                if self.bank.ready(worker):
                    m = ctx_sum / len(ctx_batches)
                    kept.append(self.bank.predict(worker, rows[owner], m, max_norm))
                    kept_slots.append(b)
                    sources[b] = "model"
                    corrected += 1

        pairs: list[tuple[int, int, Tensor, Tensor, Tensor]] = []
        if plan.check and self.correct and ctx_sum is not None:
            pairs = self._learn(plan, rows, reps, vouched, ctx_batches, ctx_sum, max_norm)

        f_left = max(self.max_faulty - len(self.convicted), 0)
        f_used = f_left
        agg = None
        if kept:
            agg, f_used = self._aggregate(plan.step, torch.stack(kept), kept_slots, f_left)
            if not all_finite(agg):  # e.g. the mean of finite rows whose sum overflows
                self.nonfinite_steps += 1
                if self.nonfinite_steps == 1:
                    log.warning("step %d: the %s of the kept rows is not finite; the step is "
                                "skipped (logged once; counted in the summary)", plan.step,
                                self.rule.aggregator)
                agg = None
        else:
            log.warning("step %d: no sub-batch gradient could be trusted; skipping", plan.step)
        if agg is None:
            agg = rows.new_zeros(rows.shape[1])
        return StepOutcome(
            aggregate=agg,
            sources=[sources[b] for b in range(plan.num_workers)],
            new_convicted=new,
            disagreements=0 if comp is None else comp.disagreements,
            learned=len(pairs),
            num_rows=len(kept),
            f=f_left,
            f_rule=f_used,
            pairs=pairs,
        )

    def _aggregate(
        self, step: int, kept: Tensor, slots: list[int], f_left: int
    ) -> tuple[Tensor, int]:
        """The rule over ``kept`` (module docstring, step 5); returns ``(vector, f used)``.
        ``slots`` (the rows' sub-batch ids, i.e. their owners' ids) key stateful rules."""
        n = kept.shape[0]
        f_used = rule_f(self.rule.aggregator, n, f_left, self.rule.params)
        if f_used == f_left:
            return self.rule(kept, f_left, client_ids=slots, round=step).vector, f_left
        self.f_lowered += 1
        if self.f_lowered == 1:
            log.warning(
                "step %d: %s cannot run with n=%d rows and f=%d (faulty workers possibly not yet "
                "convicted); %s", step, self.rule.aggregator, n, f_left,
                f"using f={f_used}, its largest for n={n}" if f_used >= 0
                else f"using the coordinate-wise {FALLBACK_RULE} (logged once; counted in the "
                "summary)",
            )
        if f_used < 0:
            fallback = Defense(FALLBACK_RULE)
            f_med = rule_f(FALLBACK_RULE, n, f_left)
            return fallback(kept, f_med, round=step).vector, -1
        return self.rule(kept, f_used, client_ids=slots, round=step).vector, f_used

    def _learn(
        self,
        plan: StepPlan,
        rows: Tensor,
        reps: dict[int, int],
        vouched: set[int],
        ctx_batches: list[int],
        ctx_sum: Tensor,
        max_norm: float,
    ) -> list[tuple[int, int, Tensor, Tensor, Tensor]]:
        """Learn (y, m_{-b}, x) pairs for convicted workers' rows with a trusted replica;
        returns those the model learned (:meth:`CorrectionBank.learn` refuses pairs with NaN/Inf)
        as ``(worker, batch, y, m, x)``."""
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
            pairs.append((a.worker, a.batch, rows[k], m, x))
        if pairs:
            if self.bank is None:
                self.bank = CorrectionBank(rows.shape[1], **self._bank_kwargs)
            learned = self.bank.learn(
                plan.step, [(w, y, m, x) for w, _, y, m, x in pairs], max_norm
            )
            pairs = [pairs[i] for i in learned]
        return pairs
