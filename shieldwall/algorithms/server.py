"""One round at the server, the same on every runtime.

1. plan: sample the round's clients, note which are poisoned (data attacks);
2. run: the runtime brings back one row per client (malformed rows already rejected);
3. attack: the adversary replaces the Byzantine clients' rows (update attacks);
4. check: rows that are not finite or too large are rejected;
5. aggregate: the defense turns the remaining rows into one, tolerating ``f`` less the rows
   rejected as malformed (their senders are proven faulty) Byzantine rows among them. A row that
   never arrived (absent, timed out, lost: an honest straggler as likely as not) does not lower
   ``f``; otherwise every quorum round, or an attacker who delays honest clients, would switch
   the defense off. Where the defense cannot run with that ``f`` on so few rows, ``f`` is lowered
   to its largest valid value (logged once, recorded per round);
6. step: the algorithm's server half moves the global state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from shieldwall.algorithms.adversary import Adversary
from shieldwall.algorithms.base import Algorithm, ModelDivergedError
from shieldwall.algorithms.defense import Defense
from shieldwall.runtime.base import (
    RoundPlan,
    Runtime,
    is_lost_row,
    is_value_rejection,
    sanitize_row,
)
from shieldwall.seeding import numpy_generator

__all__ = ["Server", "RoundRecord", "RoundFailedError"]

log = logging.getLogger(__name__)


class RoundFailedError(RuntimeError):
    """No row of a round could be used (every client absent, dead or rejected): the run stops
    after its last checkpoint; ``--resume`` continues it once clients are back."""


@dataclass
class RoundRecord:
    """What happened in one round (a line of ``metrics.jsonl``)."""

    round: int
    clients: list[int]
    byzantine: list[int]
    train_loss: float
    rejected: dict[int, str] = field(default_factory=dict)
    selected: list[int] | None = None
    dropped: list[int] | None = None
    f: int = 0
    update_norm: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "round": self.round,
            "train_loss": self.train_loss,
            "byzantine": self.byzantine,
            "f": self.f,
            "aggregate_norm": self.update_norm,
        }
        if self.rejected:
            out["rejected"] = {str(k): v for k, v in self.rejected.items()}
        if self.selected is not None:
            out["selected"] = self.selected
            out["dropped"] = self.dropped
        return out


class Server:
    """Runs rounds: plan, collect, attack, check, aggregate, step.

    Args:
        algorithm: the algorithm (its server half runs here).
        runtime: where clients run.
        defense: the aggregation step.
        adversary: the attack, or ``None``.
        num_clients: clients in total.
        clients_per_round: clients sampled per round (all when equal to ``num_clients``).
        f: Byzantine rows the defense tolerates.
        seed: the run's seed.
        max_update_norm: attack rows above this norm are rejected like malformed messages.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        runtime: Runtime,
        defense: Defense,
        adversary: Adversary | None,
        *,
        num_clients: int,
        clients_per_round: int,
        f: int,
        seed: int,
        max_update_norm: float = 1e12,
    ) -> None:
        self.algorithm = algorithm
        self.runtime = runtime
        self.defense = defense
        self.adversary = adversary
        self.num_clients = num_clients
        self.clients_per_round = clients_per_round
        self.f = f
        self.seed = seed
        self.max_update_norm = max_update_norm
        self._f_lowered = False

    def plan(self, round: int) -> RoundPlan:
        if self.clients_per_round >= self.num_clients:
            ids = tuple(range(self.num_clients))
        else:
            rng = numpy_generator(self.seed, "sample", round)
            chosen = rng.choice(self.num_clients, size=self.clients_per_round, replace=False)
            ids = tuple(sorted(int(c) for c in chosen))
        poisoned = self.adversary.poisoned(round, ids) if self.adversary else frozenset()
        return RoundPlan(round, ids, poisoned, min_accepted=self.min_rows(len(ids)))

    def min_rows(self, n: int) -> int:
        """The fewest of ``n`` rows on which the defense tolerates the full ``f`` (``n`` if
        none). A round a quorum closes early waits for that many accepted rows: the rows it
        closes on are those that came first, the Byzantine ones included (they need not
        compute), so with fewer the defense would run with ``f`` lowered on rows that may be
        mostly Byzantine."""
        # largest_f grows with the number of rows (and is cached per (n, f)): bisect
        if self.defense.largest_f(n, self.f) < self.f:
            return n
        low, high = 1, n
        while low < high:
            mid = (low + high) // 2
            if self.defense.largest_f(mid, self.f) >= self.f:
                high = mid
            else:
                low = mid + 1
        return low

    def round(self, params: Tensor, round: int) -> tuple[Tensor, RoundRecord]:
        plan = self.plan(round)
        results = self.runtime.run_clients(params, plan)
        ids = plan.client_ids
        updates, rejected = results.updates, dict(results.rejected)
        usable = [c not in rejected for c in ids]

        momentum = getattr(self.algorithm, "worker_momentum_rows", None)
        if momentum is not None:
            byz_now = self.adversary.byzantine_ids(round) if self.adversary else frozenset()
            honest = [ok and c not in byz_now for ok, c in zip(usable, ids)]
            updates = momentum(updates, ids, honest)

        byzantine: list[int] = []
        reference = params if self.algorithm.update_kind == "model_delta" else None
        if self.adversary is not None:
            byz = self.adversary.byzantine_ids(round)
            byzantine = sorted(c for c in ids if c in byz)
            attacked = self.adversary.corrupt_updates(
                updates, ids, usable, round, self.f, reference, self.defense.as_function()
            )
            for i in attacked:
                row, reason = sanitize_row(
                    updates[i], updates.shape[1], updates.dtype, self.max_update_norm
                )
                if row is None:
                    rejected[ids[i]] = f"attack row: {reason}"
                    usable[i] = False

        keep = [i for i, ok in enumerate(usable) if ok]
        if not keep:
            self._check_diverged(round, ids, rejected)
            reasons = ", ".join(f"client {c}: {why}" for c, why in sorted(rejected.items()))
            raise RoundFailedError(
                f"round {round}: no client's update could be used ({reasons}); the run stopped "
                "after its last checkpoint: bring clients back and --resume the run directory"
            )
        proven = sum(1 for why in rejected.values() if not is_lost_row(why))
        f_wanted = max(self.f - proven, 0)
        f_left = self.defense.largest_f(len(keep), f_wanted)
        if f_left < 0:
            self._check_diverged(round, ids, rejected)
            reasons = ", ".join(f"client {c}: {why}" for c, why in sorted(rejected.items()))
            raise RoundFailedError(
                f"round {round}: defense {self.defense.label!r} cannot run on the {len(keep)} "
                f"usable rows even with f=0 (rejected: {reasons}); the run stopped after its "
                "last checkpoint: bring clients back and --resume the run directory"
            )
        if f_left < f_wanted and not self._f_lowered:
            self._f_lowered = True
            log.warning(
                "round %d: %s cannot run on %d usable rows with f=%d; using f=%d, its largest "
                "(logged once; each round's f is in metrics.jsonl)",
                round, self.defense.label, len(keep), f_wanted, f_left,
            )
        kept_updates = updates[keep] if len(keep) < len(ids) else updates
        weights = results.num_samples[keep].to(updates.dtype)
        result = self.defense(
            kept_updates, f_left, weights,
            client_ids=[ids[i] for i in keep], round=round, reference=reference,
        )
        new_params = self.algorithm.server_step(params, result.vector, round)

        honest_losses = [
            float(results.losses[i]) for i in keep if ids[i] not in set(byzantine)
        ] or [float(results.losses[i]) for i in keep]
        record = RoundRecord(
            round=round,
            clients=list(ids),
            byzantine=byzantine,
            train_loss=sum(honest_losses) / len(honest_losses),
            rejected=rejected,
            f=f_left,
            update_norm=float(torch.linalg.vector_norm(result.vector)),
        )
        if result.selected is not None:
            chosen = {ids[keep[int(i)]] for i in result.selected.tolist()}
            record.selected = sorted(chosen)
            record.dropped = sorted(set(ids) - chosen)
        return new_params, record

    def _check_diverged(self, round: int, ids: tuple[int, ...], rejected: dict[int, str]) -> None:
        """Raise :class:`ModelDivergedError` when the round cannot aggregate because most of its
        rows, from clients not simulated as Byzantine, were rejected for their values: the
        model itself has diverged (every honest client computes on it), which no client can
        bring back, unlike absent clients."""
        byz = self.adversary.byzantine_ids(round) if self.adversary else frozenset()
        bad = [c for c in ids if c not in byz and is_value_rejection(rejected.get(c, ""))]
        if 2 * len(bad) <= len(ids):
            return
        examples = ", ".join(f"client {c}: {rejected[c]}" for c in bad[:3])
        raise ModelDivergedError(
            f"round {round}: the model has diverged: the updates of {len(bad)} of the "
            f"{len(ids)} clients are non-finite or above comm_args.max_update_norm "
            f"({examples}{', …' if len(bad) > 3 else ''}); the run ends here (a smaller "
            "learning rate, or clipping, may keep it from diverging)",
            round,
        )
