"""The Byzantine side of a run, built from ``attack_args``.

Decides which clients are Byzantine (one seeded draw, a fresh draw every round, or fixed ids),
whether the attack is on in a round (``attack_start``/``attack_end``, an explicit list of rounds,
``attack_prob``), corrupts their local data (data attacks) or replaces their rows after the round
(update attacks). Replaced rows take the place of the Byzantine clients' own rows, so the defense
sees one anonymous ``(n, d)`` matrix.

FedML's ``attack_type`` vocabulary is translated by :func:`plan_attack`: ``byzantine`` +
``attack_mode``, ``label_flipping`` (``ratio_of_poisoned_client`` → number of Byzantine
clients, ``poison_start_round_id``/``poison_end_round_id`` → window), ``model_replacement``
(``malicious_client_id``, ``scale_factor_S``, ``attack_training_rounds``). ``dlg`` and FedML's
other privacy attacks only observe and are refused with one line. Any other name is looked up in
the attack registry.

Update attacks run at the server on every runtime: an omniscient, colluding adversary that
controls the Byzantine clients' messages. What it sees is set by ``attack_args.knowledge``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from shieldwall.algorithms.base import DataAttack
from shieldwall.algorithms.params import check_params, convert_params, user_params
from shieldwall.attacks import ATTACKS, AttackContext
from shieldwall.attacks.schedule import attack_active, byzantine_ids
from shieldwall.config.fedml import FEDML_KEYS, Reader, Resolved, fedml_semantics, setting
from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import ExperimentConfig
from shieldwall.registry import Entry, UnknownNameError, normalize_name
from shieldwall.seeding import numpy_generator, torch_generator

__all__ = ["Adversary", "AttackPlan", "build_adversary", "attack_name", "plan_attack",
           "OBSERVING_ATTACKS"]

#: FedML attacks that only observe updates (privacy attacks): refused with this explanation.
OBSERVING_ATTACKS = {
    "dlg": "deep leakage from gradients",
    "invert_gradient": "gradient inversion",
    "revealing_labels_from_gradients": "label inference from gradients",
}


@dataclass
class AttackPlan:
    """What ``attack_args`` asks for, after FedML's vocabulary is translated."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    num_byzantine: int = 0
    num_source: str = "default"
    fixed_ids: tuple[int, ...] | None = None
    redraw: bool = False
    start: int = 0
    end: int | None = None
    rounds: frozenset[int] | None = None
    prob: Resolved = field(default_factory=lambda: Resolved(1.0, "default"))
    fedml_name: str | None = None
    notes: list[str] = field(default_factory=list)


def _refuse_observer(kind: str) -> ConfigError:
    what = OBSERVING_ATTACKS[kind]
    return ConfigError(
        f"attack_args.attack_type: {kind!r} ({what}) only observes updates to reconstruct "
        "private data and never changes training; shieldwall does not implement it. Set "
        "enable_attack: false, or choose an attack that corrupts training: byzantine (attack_mode "
        "zero/random/flip), label_flipping, model_replacement, or any of: "
        + ", ".join(ATTACKS.names())
    )


def _label_flipping(cfg: ExperimentConfig, r: Reader, plan: AttackPlan) -> None:
    ratio = r.get("ratio_of_poisoned_client", None, check=lambda v: 0 <= v <= 1,
                  expect="a fraction in [0, 1]")
    clients = cfg.train_args.client_num_in_total
    if ratio.value is not None:
        plan.num_byzantine = int(math.floor(ratio.value * clients + 0.5))
        plan.num_source = f"round({ratio.value} · {clients} clients) from {ratio.source}"
    elif "attack_args.byzantine_client_num" not in cfg.sources:
        raise ConfigError(
            "attack_args.ratio_of_poisoned_client (or byzantine_client_num) is required by "
            "FedML's 'label_flipping'"
        )
    for key in ("original_class_list", "target_class_list"):
        found = r.get(key, None, kind=None)
        if found.value is not None:
            plan.params[key], plan.sources[key] = found.value, found.source
    start = r.get("poison_start_round_id", None, kind=int, check=lambda v: v >= 0, expect=">= 0")
    end = r.get("poison_end_round_id", None, kind=int, check=lambda v: v >= 0, expect=">= 0")
    if start.value is not None:
        plan.start, plan.sources["attack_start"] = start.value, start.source
    if end.value is not None:
        plan.end, plan.sources["attack_end"] = end.value, end.source


def _model_replacement(cfg: ExperimentConfig, r: Reader, plan: AttackPlan) -> None:
    plan.num_byzantine, plan.num_source = 1, "FedML's model_replacement: one malicious client"
    client = r.get("malicious_client_id", None, kind=int,
                   check=lambda v: 0 <= v < cfg.train_args.client_num_in_total,
                   expect="a client id in [0, client_num_in_total)")
    if client.value is None:
        plan.redraw = True
        plan.notes.append("a random client is malicious each round (no malicious_client_id)")
    else:
        plan.fixed_ids, plan.sources["malicious_client_id"] = (client.value,), client.source
    scale = r.get("scale_factor_S", None, check=lambda v: v > 0, expect="> 0")
    if scale.value is not None:
        plan.params["scale_factor_S"], plan.sources["scale_factor_S"] = scale.value, scale.source
    lr = setting(cfg, "train_args", "server_lr")
    plan.params["server_lr"], plan.sources["server_lr"] = lr.value, lr.source
    rounds = r.get("attack_training_rounds", None, kind=None)
    if rounds.value is not None:
        values = rounds.value if isinstance(rounds.value, list) else [rounds.value]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
            raise ConfigError(f"{rounds.source.split(' ')[0]} must be a list of rounds counted "
                              f"from 1 (as FedML counts them), got {rounds.value!r}")
        plan.rounds = frozenset(v - 1 for v in values)
        plan.sources["attack_training_rounds"] = rounds.source


def plan_attack(cfg: ExperimentConfig) -> AttackPlan | None:
    """The attack ``attack_args`` describes, ``None`` without one; ConfigError when refused."""
    a = cfg.attack_args
    if not a.enable_attack or a.attack_type is None or str(a.attack_type).lower() == "none":
        return None
    kind = normalize_name(str(a.attack_type))
    if kind in OBSERVING_ATTACKS:
        raise _refuse_observer(kind)
    r = Reader(cfg, kind, home="attack_args")
    num = setting(cfg, "attack_args", "byzantine_client_num")
    plan = AttackPlan(str(a.attack_type), num_byzantine=num.value, num_source=num.source,
                      redraw=a.byzantine_redraw, start=a.attack_start, end=a.attack_end)
    if kind == "byzantine":
        if a.attack_mode is None:
            raise ConfigError(
                "attack_args.attack_mode is required with attack_type: byzantine "
                "(FedML modes: zero, random, flip; or any attack name)"
            )
        plan.name, plan.fedml_name = a.attack_mode, f"byzantine/{a.attack_mode}"
        if fedml_semantics(cfg) and "attack_args.byzantine_redraw" not in cfg.sources:
            plan.redraw = True  # FedML's ByzantineAttack samples its clients every round
    elif kind in ("label_flipping", "model_replacement"):
        plan.fedml_name = kind
        (_label_flipping if kind == "label_flipping" else _model_replacement)(cfg, r, plan)
    plan.prob = r.get("attack_prob", 1.0, check=lambda v: 0 <= v <= 1, expect="in [0, 1]")
    try:
        entry = ATTACKS.entry(plan.name)
    except UnknownNameError as exc:
        field_ = "attack_mode" if kind == "byzantine" else "attack_type"
        raise ConfigError(f"attack_args.{field_}: {exc}") from None
    plan.name = entry.name
    accepted, unknown = user_params(entry), {}
    for key, value in a.params.items():
        if key in r.used or key in plan.params:
            continue
        if key in accepted:
            origin = cfg.sources.get(f"attack_args.{key}", "file")
            plan.params[key], plan.sources[key] = value, f"attack_args.{key} ({origin})"
        elif key in FEDML_KEYS:  # FedML's flat namespace: may be the defense's (see check)
            plan.notes.append(f"attack_args.{key} is not a parameter of the attack {plan.name!r}")
        else:
            unknown[key] = value
    check_params(entry, unknown, "attack_args")
    plan.params = convert_params(entry, plan.params, "attack_args")
    return plan


def attack_name(cfg: ExperimentConfig) -> str | None:
    """The registry name of the configured attack (FedML's vocabulary resolved), or ``None``."""
    plan = plan_attack(cfg)
    return None if plan is None else plan.name


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
        honest_only: update attacks see only the honest rows, not their own (``knowledge:
            honest``, as the bucketing paper's attacks).
        num_classes: classes of the task (for label flipping).
        fixed_ids: these clients are the Byzantine ones (overrides the draw).
        rounds: the attack runs only in these rounds (0-based), within the window.
        prob: probability that the attack runs in a round (a seeded draw per round).
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
    honest_only: bool = False
    num_classes: int = 10
    fixed_ids: tuple[int, ...] | None = None
    rounds: frozenset[int] | None = None
    prob: float = 1.0
    _memory: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def kind(self) -> str:
        return self.entry.meta.get("kind", "update")

    def active(self, round: int) -> bool:
        if not attack_active(round, self.start, self.end):
            return False
        if self.rounds is not None and round not in self.rounds:
            return False
        if self.prob < 1.0:
            return bool(numpy_generator(self.seed, "prob:attack", round).random() < self.prob)
        return True

    def byzantine_ids(self, round: int) -> frozenset[int]:
        if self.fixed_ids is not None:
            return frozenset(self.fixed_ids)
        return frozenset(
            byzantine_ids(
                self.num_clients, self.num_byzantine, round, seed=self.seed, redraw=self.redraw
            )
        )

    def state_dict(self) -> dict[str, Any]:
        """What the attack remembers across rounds (``ctx.state``: mimic's target…), for
        checkpoints; tensors are copied to the CPU."""
        return {"memory": _to_cpu(self._memory)} if self._memory else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._memory.clear()
        self._memory.update(state.get("memory", {}))

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
        if self.honest_only and honest_pos:
            visible_pos = honest_pos
        else:
            visible_pos = byz_pos + honest_pos if self.omniscient else byz_pos
        ctx = AttackContext(
            n=len(client_ids),
            f=f,
            round=round,
            generator=torch_generator(self.seed, "attack", round),
            reference=reference,
            aggregator=aggregator,
            num_classes=self.num_classes,
            state=self._memory,
        )
        rows = self.entry.obj(updates[visible_pos].clone(), len(byz_pos), ctx, **self.params)
        updates[byz_pos] = rows.to(dtype=updates.dtype, device=updates.device)
        return byz_pos


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def build_adversary(cfg: ExperimentConfig, num_classes: int) -> Adversary | None:
    """The adversary ``cfg.attack_args`` describes, or ``None`` when there is no attack."""
    plan = plan_attack(cfg)
    if plan is None or plan.num_byzantine == 0:
        return None
    if plan.num_byzantine > cfg.train_args.client_num_in_total:
        raise ConfigError(
            f"the attack needs {plan.num_byzantine} Byzantine clients ({plan.num_source}) but "
            f"there are {cfg.train_args.client_num_in_total} clients"
        )
    return Adversary(
        entry=ATTACKS.entry(plan.name),
        params=dict(plan.params),
        num_byzantine=plan.num_byzantine,
        num_clients=cfg.train_args.client_num_in_total,
        seed=cfg.common_args.random_seed,
        start=plan.start,
        end=plan.end,
        redraw=plan.redraw,
        omniscient=cfg.attack_args.knowledge.lower() in ("omniscient", "honest"),
        honest_only=cfg.attack_args.knowledge.lower() == "honest",
        num_classes=num_classes,
        fixed_ids=plan.fixed_ids,
        rounds=plan.rounds,
        prob=float(plan.prob.value),
    )
