r"""Fault injection: what a faulty worker returns instead of its true sub-batch gradient.

Any *update* attack of :data:`shieldwall.attacks.ATTACKS` is a fault model; the default is
``trivial_noise`` (a broken accelerator: :math:`y = x + \xi`, :math:`\xi \sim N(0, \sigma^2 I)`
afresh every step). A faulty worker corrupts *every* gradient it computes, replicas included.

Non-omniscient faults are applied row by row, each row with its own generator seeded by
``(seed, step, worker, batch)``: the result depends only on who computed what, never on how the
rows are laid out, so the simulator and the multi-process runtime inject identical faults and two
faulty workers computing the same sub-batch draw independent noise. Omniscient attacks (ALIE,
IPM, Min-Max…) see all the step's true rows (faulty workers' own rows first, as the attack
contract asks) and run once per step; they are simulator-only. ALIE in its non-omniscient form
(:data:`POOLED`) estimates the honest mean and spread from the faulty workers' *own* true rows
of the step, pooled (the paper's colluding attackers): it too runs once per step, in the simulator.

The strong faults of the docs' tables: ``sign_flip`` with ``scale`` 10 (``--fault sign_flip
--fault-scale 10``: :math:`y = -10x`; with 5 of 16 rows the plain mean is :math:`-\tfrac{39}{16}`
times the true gradient, i.e. ascent) and ``alie``. The fault-tolerant DDP simulator this command
mirrors hard-codes :math:`y = 10x` (no sign flip).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from shieldwall.algorithms.params import convert_params
from shieldwall.attacks import ATTACKS, AttackContext
from shieldwall.seeding import torch_generator

__all__ = ["FaultInjector", "POOLED"]

POOLED = frozenset({"alie"})
"""Non-omniscient attacks that estimate statistics over several honest rows (see above)."""


class FaultInjector:
    """Applies the fault ``name`` to the rows computed by ``faulty`` workers.

    Args:
        name: an update attack's registry name (``trivial_noise``, ``sign_flip``, ``alie``…).
        faulty: ids of the faulty workers.
        num_workers: ``w`` (the attack context's ``n``).
        seed: the run's seed.
        sigma: passed as ``sigma`` when the attack takes one (``--fault-sigma``).
        scale: passed as ``scale`` when the attack takes one (``--fault-scale``).
        params: further keyword parameters of the attack.
    """

    def __init__(
        self,
        name: str,
        faulty: list[int] | tuple[int, ...],
        num_workers: int,
        *,
        seed: int = 0,
        sigma: float | None = None,
        scale: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        entry = ATTACKS.entry(name)
        if entry.meta.get("kind", "update") != "update":
            raise ValueError(
                f"fault {name!r} is a {entry.meta.get('kind')} attack; ddp faults act on gradients"
                " (update attacks: " + ", ".join(
                    e.name for e in ATTACKS if e.meta.get("kind", "update") == "update") + ")"
            )
        bad = [i for i in faulty if not 0 <= i < num_workers]
        if bad:
            raise ValueError(f"faulty worker ids {bad} are outside 0..{num_workers - 1}")
        self.name = entry.name
        self.fn = entry.obj
        self.omniscient = bool(entry.meta.get("omniscient", False))
        self.pooled = self.name in POOLED
        """Runs once per step on the faulty workers' own true rows (simulator only)."""
        self.faulty = frozenset(int(i) for i in faulty)
        self.num_workers = num_workers
        self.seed = seed
        self.params = dict(params or {})
        accepted = set(entry.param_names())
        if sigma is not None and "sigma" in accepted:
            self.params.setdefault("sigma", float(sigma))
        if scale is not None:
            if "scale" not in accepted:
                raise ValueError(f"fault {self.name!r} takes no scale (--fault-scale); it accepts "
                                 f"{sorted(accepted)}")
            self.params.setdefault("scale", float(scale))
        unknown = set(self.params) - accepted
        if unknown and not any(
            p.kind == p.VAR_KEYWORD for p in inspect.signature(self.fn).parameters.values()
        ):
            raise ValueError(
                f"fault {self.name!r} takes no parameter(s) {sorted(unknown)}; "
                f"it accepts {sorted(accepted)}"
            )
        self.params = convert_params(entry, self.params, "fault_params")

    def _ctx(self, step: int, reference: Tensor | None, *coords: int) -> AttackContext:
        gen = torch_generator(self.seed, "ft-fault", step, *coords)
        return AttackContext(
            n=self.num_workers, f=len(self.faulty), round=step, generator=gen, reference=reference
        )

    def apply(
        self,
        rows: Tensor,
        workers: list[int],
        batches: list[int],
        step: int,
        *,
        reference: Tensor | None = None,
    ) -> Tensor:
        """``rows`` (true gradients, one per ``(worker, batch)``), faulty workers' rows replaced.

        Returns a new tensor when anything is faulty, ``rows`` itself otherwise.
        """
        bad = [k for k, w in enumerate(workers) if w in self.faulty]
        if not bad:
            return rows
        out = rows.clone()
        if self.omniscient:
            good = [k for k in range(len(workers)) if k not in set(bad)]
            honest = torch.cat([rows[bad], rows[good]])
            ctx = self._ctx(step, reference)
            out[bad] = self.fn(honest, len(bad), ctx, **self.params).to(rows.dtype)
            return out
        if self.pooled:
            ctx = self._ctx(step, reference)
            out[bad] = self.fn(rows[bad], len(bad), ctx, **self.params).to(rows.dtype)
            return out
        for k in bad:
            ctx = self._ctx(step, reference, workers[k], batches[k])
            out[k] = self.fn(rows[k : k + 1], 1, ctx, **self.params)[0].to(rows.dtype)
        return out
