"""The Byzantine side of a run, built from ``attack_args``.

Decides which clients are Byzantine (one seeded draw, or a fresh draw every round), whether the
attack is on in a round (``attack_start``/``attack_end``), corrupts their local data (data
attacks) or replaces their rows after the round (update attacks). Replaced rows take the place of
the Byzantine clients' own rows, so the defense sees one anonymous ``(n, d)`` matrix.

Update attacks run at the server on every runtime: an omniscient, colluding adversary that
controls the Byzantine clients' messages. What it sees is set by ``attack_args.knowledge``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from shieldwall.algorithms.base import DataAttack
from shieldwall.algorithms.defense import check_params
from shieldwall.attacks import ATTACKS, AttackContext
from shieldwall.attacks.schedule import attack_active, byzantine_ids
from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import ExperimentConfig
from shieldwall.registry import Entry, UnknownNameError
from shieldwall.seeding import torch_generator

__all__ = ["Adversary", "build_adversary", "attack_name"]


def attack_name(cfg: ExperimentConfig) -> str | None:
    """The attack the config names (FedML's ``byzantine`` + ``attack_mode`` resolved)."""
    a = cfg.attack_args
    if not a.enable_attack:
        return None
    kind = a.attack_type
    if kind is None or str(kind).lower() == "none":
        return None
    if str(kind).lower() == "byzantine":
        if a.attack_mode is None:
            raise ConfigError(
                "attack_args.attack_mode is required with attack_type: byzantine "
                "(FedML modes: zero, random, flip; or any attack name)"
            )
        return a.attack_mode
    return str(kind)


@dataclass
class Adversary:
    """The configured attack.

    Attributes:
        entry: the attack's registry entry.
        params: its keyword parameters.
        num_byzantine: how many clients are Byzantine.
        num_clients: clients in total.
        seed: the run's seed.
        start, end: first and last round (inclusive; ``end=None``: no end) of the attack.
        redraw: draw the Byzantine clients anew each round.
        omniscient: update attacks see every honest row of the round (else only their own).
        num_classes: classes of the task (for label flipping).
    """

    entry: Entry
    params: dict[str, Any]
    num_byzantine: int
    num_clients: int
    seed: int
    start: int = 0
    end: int | None = None
    redraw: bool = False
    omniscient: bool = True
    num_classes: int = 10

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def kind(self) -> str:
        return self.entry.meta.get("kind", "update")

    def active(self, round: int) -> bool:
        return attack_active(round, self.start, self.end)

    def byzantine_ids(self, round: int) -> frozenset[int]:
        return frozenset(
            byzantine_ids(
                self.num_clients, self.num_byzantine, round, seed=self.seed, redraw=self.redraw
            )
        )

    def data_attack(self) -> DataAttack | None:
        """The data corruption Byzantine workers apply to their batches (data attacks only)."""
        if self.kind != "data":
            return None
        fn, params = self.entry.obj, self.params

        def corrupt(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
            ctx = AttackContext(
                n=self.num_clients, f=self.num_byzantine, generator=generator,
                num_classes=self.num_classes,
            )
            return fn(x, y, ctx, **params)

        return corrupt

    def poisoned(self, round: int, client_ids: tuple[int, ...]) -> frozenset[int]:
        if self.kind != "data" or not self.active(round):
            return frozenset()
        return frozenset(c for c in client_ids if c in self.byzantine_ids(round))

    def corrupt_updates(
        self,
        updates: Tensor,
        client_ids: tuple[int, ...],
        usable: list[bool],
        round: int,
        f: int,
        reference: Tensor | None,
        aggregator: Callable[[Tensor, int], Tensor] | None,
    ) -> list[int]:
        """Replace the Byzantine clients' rows in ``updates`` in place; return their positions."""
        if self.kind != "update" or not self.active(round):
            return []
        byz = self.byzantine_ids(round)
        byz_pos = [i for i, c in enumerate(client_ids) if c in byz and usable[i]]
        if not byz_pos:
            return []
        honest_pos = [i for i, c in enumerate(client_ids) if c not in byz and usable[i]]
        visible_pos = byz_pos + honest_pos if self.omniscient else byz_pos
        ctx = AttackContext(
            n=len(client_ids),
            f=f,
            round=round,
            generator=torch_generator(self.seed, "attack", round),
            reference=reference,
            aggregator=aggregator,
            num_classes=self.num_classes,
        )
        rows = self.entry.obj(updates[visible_pos].clone(), len(byz_pos), ctx, **self.params)
        updates[byz_pos] = rows.to(dtype=updates.dtype, device=updates.device)
        return byz_pos


def build_adversary(cfg: ExperimentConfig, num_classes: int) -> Adversary | None:
    """The adversary ``cfg.attack_args`` describes, or ``None`` when there is no attack."""
    a = cfg.attack_args
    name = attack_name(cfg)
    if name is None or a.byzantine_client_num == 0:
        return None
    try:
        entry = ATTACKS.entry(name)
    except UnknownNameError as exc:
        field = "attack_mode" if str(a.attack_type).lower() == "byzantine" else "attack_type"
        raise ConfigError(f"attack_args.{field}: {exc}") from None
    check_params(entry, a.params, "attack_args")
    return Adversary(
        entry=entry,
        params=dict(a.params),
        num_byzantine=a.byzantine_client_num,
        num_clients=cfg.train_args.client_num_in_total,
        seed=cfg.common_args.random_seed,
        start=a.attack_start,
        end=a.attack_end,
        redraw=a.byzantine_redraw,
        omniscient=a.knowledge.lower() == "omniscient",
        num_classes=num_classes,
    )
