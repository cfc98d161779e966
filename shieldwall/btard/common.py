"""What the peers of a step share: the protocol's numbers, the gradient oracle and the step's
common knowledge (:class:`RoundView`, filled in phase by phase from broadcast messages)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from shieldwall.algorithms.base import ClientData, ClientTask, DataAttack, LocalResult
from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.btard.crypto import tensor_digest
from shieldwall.btard.messages import Accuse, Check, Commit, ResultCommit, Reveal
from shieldwall.seeding import shared_dropout_rng

__all__ = ["ProtocolConfig", "GradientOracle", "RoundView"]


@dataclass(frozen=True)
class ProtocolConfig:
    """The protocol's numbers (``btard_args``; see :class:`shieldwall.config.schema.BTARDArgs`)."""

    tau: float = 1.0
    cc_iterations: int = 5
    rel_tol: float = 1e-4
    check_sigmas: float = 8.0
    validators: int = 1
    check_mode: str = "real"
    check_proba: float | None = None
    silence_limit: int = 3
    grad_rtol: float = 1e-4
    grad_atol: float = 1e-7
    scheme: str = "hmac"


class GradientOracle:
    """Any peer's gradient at given parameters, from the public data and batch seeds.

    Validators, judges and omniscient attackers all recompute gradients; results are cached per
    ``(round, peer, poisoned, parameters)`` so that peers sharing a process share the work.
    """

    def __init__(
        self,
        algorithm: PSSGD,
        shards: dict[int, ClientData],
        seed: int,
        data_attack: DataAttack | None = None,
    ) -> None:
        self.algorithm, self.shards, self.seed = algorithm, shards, seed
        self.data_attack = data_attack
        self._cache: dict[tuple, LocalResult] = {}
        self._round = -1

    @property
    def dim(self) -> int:
        return self.algorithm.flat.dim

    def compute(self, params: Tensor, r: int, peer: int, poisoned: bool = False) -> LocalResult:
        if r != self._round:
            self._cache.clear()
            self._round = r
        key = (peer, poisoned, tensor_digest(params))
        hit = self._cache.get(key)
        if hit is None:
            task = ClientTask(r, peer, self.seed, poisoned)
            period = int(getattr(self.algorithm.args, "shared_dropout_rounds", 0) or 0)
            with shared_dropout_rng(self.seed, r, period, self.algorithm.device):
                hit = self.algorithm.client_update(
                    params, self.shards[peer], task, self.data_attack
                )
            self._cache[key] = hit
        return hit


@dataclass
class RoundView:
    """What every peer knows about step ``round`` (broadcast data), filled in phase by phase."""

    round: int
    present: tuple[int, ...] = ()
    commits: dict[int, Commit] = field(default_factory=dict)
    result_commits: dict[int, ResultCommit] = field(default_factory=dict)
    reveals: dict[int, Reveal] = field(default_factory=dict)
    bad_reveals: tuple[int, ...] = ()
    shared_seed: int | None = None
    z_parts: list[Tensor] = field(default_factory=list)
    validation: tuple[tuple[int, int], ...] = ()
    checks: dict[int, Check] = field(default_factory=dict)
    failing_parts: tuple[int, ...] = ()
    accuses: dict[int, Accuse] = field(default_factory=dict)
    attacking: frozenset[int] = frozenset()
    byzantine: frozenset[int] = frozenset()

    def aggregator(self, part: int) -> int:
        return self.present[part]
