"""The communication contract between the server loop and wherever clients run.

The server asks a :class:`Runtime` to run one round (:meth:`Runtime.run_clients`): send the
global vector to the round's clients, have each compute :meth:`Algorithm.client_update`, and
bring the rows back as one ``(n, d)`` tensor. A runtime never aggregates and never attacks: the
server does both, identically on every runtime. A malformed answer (wrong shape or dtype,
NaN/Inf, norm above the bound, no answer in time) is not an exception: :func:`sanitize_row`
turns it into a rejected row with a reason, and the server treats it as Byzantine input.

The worker side is a :class:`ClientExecutor`: the algorithm plus the shards of the clients this
process hosts (all of them in the simulator, its own in a multi-process run).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor

from shieldwall.algorithms.base import Algorithm, ClientData, ClientTask, DataAttack, LocalResult
from shieldwall.config.schema import ExperimentConfig
from shieldwall.registry import Registry
from shieldwall.seeding import shared_dropout_rng

__all__ = [
    "RUNTIMES",
    "RoundPlan",
    "RoundResults",
    "Runtime",
    "ClientExecutor",
    "LOST_ROW_PREFIXES",
    "is_lost_row",
    "is_value_rejection",
    "row_form_problem",
    "sanitize_matrix",
    "sanitize_row",
]

RUNTIMES: Registry = Registry("runtime")

#: Rejection reasons of rows that never arrived (a client absent, timed out or lost), as
#: opposed to rows that arrived malformed: only the latter prove their sender faulty.
LOST_ROW_PREFIXES = ("absent:", "timeout:")


def is_lost_row(reason: str) -> bool:
    """Whether a rejected row's ``reason`` says it never arrived (see ``LOST_ROW_PREFIXES``)."""
    return str(reason).startswith(LOST_ROW_PREFIXES)


def is_value_rejection(reason: str) -> bool:
    """Whether a row was rejected for its values (non-finite, or a norm above the bound; see
    :func:`sanitize_row`) rather than its form or its absence."""
    return str(reason).startswith(("non-finite values", "norm "))


@dataclass(frozen=True)
class RoundPlan:
    """One round as the server planned it.

    Attributes:
        round: 0-based round (or step) index.
        client_ids: the clients taking part, in row order.
        poisoned_ids: clients whose local data the data attack corrupts this round.
        min_accepted: the fewest accepted rows on which the defense tolerates its full ``f``;
            a runtime that may close a round before every client answered (a quorum) waits
            for at least this many (0: no floor).
    """

    round: int
    client_ids: tuple[int, ...]
    poisoned_ids: frozenset[int] = frozenset()
    min_accepted: int = 0


@dataclass
class RoundResults:
    """The rows of one round, in ``plan.client_ids`` order.

    Attributes:
        updates: ``(n, d)``; rejected rows are NaN.
        num_samples: ``(n,)`` samples each client used (0 for rejected rows).
        losses: ``(n,)`` mean local training loss (NaN for rejected rows).
        rejected: client id → why its row was rejected.
    """

    updates: Tensor
    num_samples: Tensor
    losses: Tensor
    rejected: dict[int, str] = field(default_factory=dict)


class ClientExecutor:
    """Runs :meth:`Algorithm.client_update` for the clients a process hosts."""

    def __init__(
        self,
        algorithm: Algorithm,
        shards: dict[int, ClientData],
        seed: int,
        data_attack: DataAttack | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.shards = shards
        self.seed = seed
        self.data_attack = data_attack

    @property
    def dim(self) -> int:
        return self.algorithm.flat.dim

    def run(self, params: Tensor, plan: RoundPlan, client_id: int) -> LocalResult:
        task = ClientTask(plan.round, client_id, self.seed, client_id in plan.poisoned_ids)
        period = int(getattr(self.algorithm.args, "shared_dropout_rounds", 0) or 0)
        with shared_dropout_rng(self.seed, plan.round, period, self.algorithm.device):
            return self.algorithm.client_update(
                params, self.shards[client_id], task, self.data_attack
            )

    def warm_up(self) -> None:
        """One throw-away update of a hosted client (round -1, result dropped): torch imports
        much lazily on the first optimizer step (seconds), which would otherwise eat into the
        first round's timeout. Multi-process runtimes call it before their first round."""
        if self.shards:
            c = next(iter(self.shards))
            self.run(self.algorithm.flat.vector(), RoundPlan(-1, (c,)), c)


def row_form_problem(row: object, dim: int, dtype: torch.dtype) -> str | None:
    """Why ``row`` is not a ``(dim,)`` tensor of ``dtype``, or ``None`` (no values read)."""
    if not isinstance(row, Tensor):
        return f"not a tensor ({type(row).__name__})"
    if row.dtype != dtype:
        return f"dtype {row.dtype}, expected {dtype}"
    if row.shape != (dim,):
        return f"shape {tuple(row.shape)}, expected ({dim},)"
    return None


def sanitize_row(
    row: object, dim: int, dtype: torch.dtype, max_norm: float
) -> tuple[Tensor | None, str | None]:
    """Check one received row: ``(row, None)`` if acceptable, else ``(None, reason)``."""
    problem = row_form_problem(row, dim, dtype)
    if problem is not None:
        return None, problem
    assert isinstance(row, Tensor)
    if not bool(torch.isfinite(row).all()):
        return None, "non-finite values"
    norm = float(torch.linalg.vector_norm(row))
    if norm > max_norm:
        return None, f"norm {norm:.3g} above the bound {max_norm:.3g}"
    return row, None


def sanitize_matrix(updates: Tensor, rows: Tensor, max_norm: float) -> dict[int, str]:
    """:func:`sanitize_row`'s value checks for the ``rows`` (indices) of an ``(n, d)`` matrix,
    with one norm pass over them: ``{row index: reason}`` for the rejected ones."""
    if rows.numel() == 0:
        return {}
    norms = torch.linalg.vector_norm(updates[rows] if rows.numel() < len(updates) else updates,
                                     dim=1)
    reasons: dict[int, str] = {}
    for j in torch.nonzero(~(norms <= max_norm)).flatten().tolist():  # NaN norms included
        i = int(rows[j])
        if not bool(torch.isfinite(updates[i]).all()):
            reasons[i] = "non-finite values"
        else:
            reasons[i] = f"norm {float(norms[j]):.3g} above the bound {max_norm:.3g}"
    return reasons


class Runtime(ABC):
    """Where clients run (see module docstring)."""

    is_server: bool = True
    """False on processes that only host clients; they call :meth:`serve` instead."""

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: ExperimentConfig, executor: ClientExecutor) -> Runtime:
        """Build the runtime for ``cfg``; ``executor`` hosts this process's clients."""

    @abstractmethod
    def run_clients(self, params: Tensor, plan: RoundPlan) -> RoundResults:
        """Run one round's clients from global ``params``; rows in ``plan.client_ids`` order."""

    def serve(self) -> None:
        """Client-hosting processes: answer the server's rounds until it says stop."""
        raise NotImplementedError(f"{type(self).__name__} has no client processes")

    def close(self) -> None:
        """Release processes, sockets and groups (called once, in ``finally``)."""
        return None
