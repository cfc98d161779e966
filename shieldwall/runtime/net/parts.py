"""FedML's per-round data-part selection for cross-silo runs (``data_silo_selection``).

In FedML's cross-silo server, when ``client_num_in_total`` (data parts) exceeds the number of silos
in a round, every round draws the parts anew,

    np.random.seed(round_idx)
    data_silo_index_list = np.random.choice(range(client_num_in_total), n, replace=False)

(``FedMLAggregator.data_silo_selection``), and the j-th silo of the round trains part
``data_silo_index_list[j]`` (every silo loads the whole partition). FedML sends the part index with
the round's model; here each silo computes the same draw from the round number, so nothing new
travels: the silo's position in the round is its position among the round's sampled clients,
which the silo recomputes from the server's sampling rule (:meth:`Server.plan`: all listed
clients, or a seeded draw of ``client_num_per_round``). The draw is FedML's, bit for bit
(NumPy's legacy ``RandomState(round_idx)``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from shieldwall.algorithms.base import ClientData, LocalResult
from shieldwall.config.schema import ExperimentConfig
from shieldwall.runtime.base import ClientExecutor, RoundPlan
from shieldwall.seeding import numpy_generator

if TYPE_CHECKING:
    from shieldwall.train import Components

log = logging.getLogger(__name__)

__all__ = ["data_silo_selection", "round_clients", "PartSelectingExecutor"]


def data_silo_selection(round_idx: int, num_parts: int, num_silos: int) -> list[int]:
    """FedML's ``data_silo_selection``: the data part of each of the round's silos, in order."""
    if num_parts == num_silos:
        return list(range(num_silos))
    rng = np.random.RandomState(round_idx)
    return [int(i) for i in rng.choice(range(num_parts), num_silos, replace=False)]


def round_clients(round_idx: int, num_clients: int, per_round: int, seed: int) -> list[int]:
    """The round's client indices, sampled as :meth:`Server.plan` samples them."""
    if per_round >= num_clients:
        return list(range(num_clients))
    rng = numpy_generator(seed, "sample", round_idx)
    return sorted(int(c) for c in rng.choice(num_clients, size=per_round, replace=False))


class PartSelectingExecutor(ClientExecutor):
    """A silo holding every data part, training each round the part FedML's draw gives it.

    Args:
        executor: the algorithm, the seed, the data attack and *all* parts (by part index).
        index: the silo's round index (its position in ``client_id_list``).
        num_silos: listed silos (the server's ``client_num_in_total``).
        per_round: silos per round.
    """

    def __init__(self, executor: ClientExecutor, index: int, num_silos: int,
                 per_round: int) -> None:
        super().__init__(executor.algorithm, {}, executor.seed, executor.data_attack)
        self.parts = executor.shards
        self.index, self.num_silos, self.per_round = index, num_silos, per_round

    @classmethod
    def from_components(cls, cfg: ExperimentConfig, parts: Components,
                        index: int) -> PartSelectingExecutor:
        from shieldwall.runtime.net.settings import client_ids

        adversary = parts.adversary
        base = ClientExecutor(parts.algorithm, parts.shards, cfg.common_args.random_seed,
                              adversary.data_attack() if adversary else None)
        silos = len(client_ids(cfg))
        per_round = min(cfg.train_args.client_num_per_round or silos, silos)
        return cls(base, index, silos, per_round)

    def part_of(self, round_idx: int) -> int:
        """The data part this silo trains in round ``round_idx``."""
        chosen = round_clients(round_idx, self.num_silos, self.per_round, self.seed)
        position = chosen.index(self.index) if self.index in chosen else 0
        return data_silo_selection(round_idx, len(self.parts), len(chosen))[position]

    def shard_for(self, round_idx: int) -> ClientData:
        part = self.part_of(round_idx)
        shard = self.parts[part]
        log.debug("round %d: silo index %d trains data part %d (%d samples)", round_idx,
                  self.index, part, len(shard))
        return ClientData(self.index, shard.x, shard.y)

    def run(self, params: Tensor, plan: RoundPlan, client_id: int) -> LocalResult:
        self.shards = {client_id: self.shard_for(plan.round)}
        return super().run(params, plan, client_id)

    def warm_up(self) -> None:
        """One throw-away update on the first part (FedML's draw is for rounds >= 0 only)."""
        first = self.parts[next(iter(self.parts))]
        self.shards = {self.index: ClientData(self.index, first.x, first.y)}
        ClientExecutor.run(self, self.algorithm.flat.vector(), RoundPlan(-1, (self.index,)),
                           self.index)
