"""From ``redundancy_args`` to what a redundant PS-SGD run needs (names resolved, sizes checked).

:func:`resolve_setup` turns a :class:`~shieldwall.config.schema.RedundancyArgs` and K into a
:class:`RedundantSetup`: the placement, q, c_max(q) with a worst-case adversary set (from
:mod:`.analysis`; for DETOX ByzShield's attack on DETOX, :func:`~.detox.detox_worst_adversaries`),
the attack and the aggregator. ByzShield's names (approach, err-mode, lis-simulation, mode) are
translated with :mod:`.byzshield_names`; other values are taken as shieldwall registry names.
:func:`args_from_byzshield` accepts ByzShield's dashed flags (``group-size``, ``worker-fail``,
``err-mode``, ``rama-m``, ``lis-simulation``) and returns the section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from shieldwall.config import ConfigError
from shieldwall.config.schema import RedundancyArgs
from shieldwall.redundancy.analysis import distortion
from shieldwall.redundancy.byzshield_names import APPROACHES, ERR_MODES, MODES
from shieldwall.redundancy.detox import detox_adversaries, detox_cmax, detox_worst_adversaries
from shieldwall.redundancy.placement import PLACEMENTS, Placement, PlacementError, build_placement
from shieldwall.registry import UnknownNameError, normalize_name
from shieldwall.seeding import torch_generator

__all__ = ["RedundantSetup", "resolve_setup", "args_from_byzshield", "DASHED_KEYS"]

#: ByzShield's dashed flags → ``redundancy_args`` fields.
DASHED_KEYS: dict[str, str] = {
    "group-size": "group_size",
    "worker-fail": "worker_fail",
    "err-mode": "err_mode",
    "rama-m": "rama_m",
    "lis-simulation": "lis_simulation",
    "byzantine-gen": "adversary_choice",
    "detox-attack": "detox_attack",
    "lr-step": "lr_step",
    "eval-freq": "eval_freq",
    "train-dir": "train_dir",
}


@dataclass
class RedundantSetup:
    """A redundant run in shieldwall names.

    Attributes:
        placement: who computes which file.
        approach: the configured approach (normalised).
        q: number of adversarial workers.
        c_max: most files q adversaries control (worst case over sets).
        worst_case: a set of q workers attaining ``c_max`` (for DETOX: ByzShield's attack).
        adversary_choice: ``worst_case`` or ``random``.
        attack: attack registry name; ``attack_params`` its parameters.
        aggregator: aggregator registry name; ``f`` the f it (and the attack) is given.
    """

    placement: Placement
    approach: str
    q: int
    c_max: int
    worst_case: list[int]
    adversary_choice: str
    attack: str
    aggregator: str
    f: int
    attack_params: dict[str, Any] = field(default_factory=dict)

    def adversaries(self, seed: int, step: int) -> list[int]:
        """The adversarial workers at ``step`` (fixed worst case, or a seeded random draw)."""
        if self.q == 0:
            return []
        if self.adversary_choice == "random":
            gen = torch_generator(seed, "rd-choice", step)
            perm = torch.randperm(self.placement.num_workers, generator=gen)
            return sorted(perm[: self.q].tolist())
        return list(self.worst_case)


def _norm_table(table: dict[str, Any]) -> dict[str, Any]:
    return {normalize_name(k): v for k, v in table.items()}


def _placement_name(approach: str) -> tuple[str, bool]:
    key = normalize_name(approach)
    table = _norm_table(APPROACHES)
    if key in table:
        return table[key]
    try:
        return PLACEMENTS.entry(approach).name, False
    except UnknownNameError:
        raise ConfigError(
            f"redundancy_args.approach: unknown {approach!r}; valid: "
            f"{', '.join(APPROACHES)}, or a placement: {', '.join(PLACEMENTS.names())}"
        ) from None


def _attack_name(args: RedundancyArgs) -> str:
    from shieldwall.attacks import ATTACKS

    if args.lis_simulation:
        return "alie"
    name = _norm_table(ERR_MODES).get(normalize_name(args.err_mode), args.err_mode)
    try:
        entry = ATTACKS.entry(name)
    except UnknownNameError as exc:
        raise ConfigError(f"redundancy_args.err_mode: {exc}") from None
    if entry.meta.get("kind", "update") != "update":
        raise ConfigError(
            f"redundancy_args.err_mode: {entry.name!r} is a data attack; redundancy runs take "
            "update attacks (the adversaries replace the file gradients they send)"
        )
    return entry.name


def _aggregator_name(args: RedundancyArgs, approach: str) -> str:
    from shieldwall.aggregators import AGGREGATORS

    if approach == normalize_name("maj_vote"):
        return "mean"
    name = _norm_table(MODES).get(normalize_name(args.mode), args.mode)
    try:
        return AGGREGATORS.entry(name).name
    except UnknownNameError as exc:
        raise ConfigError(f"redundancy_args.mode: {exc}") from None


def resolve_setup(args: RedundancyArgs, num_workers: int) -> RedundantSetup:
    """Resolve names, build the placement, compute c_max(q) and the worst-case set."""
    approach = normalize_name(args.approach)
    scheme, detox_attack = _placement_name(args.approach)
    r = 1 if scheme == "baseline" else int(args.group_size)
    params: dict[str, Any] = {}
    if scheme == "rama_two" and args.rama_m is not None and args.rama_m != -1:
        params["m"] = int(args.rama_m)  # ByzShield's -1 (its default) means m = r
    try:
        placement = build_placement(scheme, num_workers, r, **params)
    except (PlacementError, TypeError) as exc:
        raise ConfigError(f"redundancy_args: {exc}") from None
    q = int(args.worker_fail)
    if not 0 <= q <= num_workers:
        raise ConfigError(f"redundancy_args.worker_fail must be in 0..{num_workers}, got {q}")
    if detox_attack:  # ByzShield's attack on DETOX picks the set; f stays the worst case's
        worst = detox_adversaries(args.detox_attack, q, num_workers, placement.replication)
        c_max = detox_cmax(q, num_workers, placement.replication,
                           int(placement.params.get("files_per_group", 1)))
    elif scheme == "detox":
        worst = detox_worst_adversaries(q, num_workers, placement.replication)
        from shieldwall.redundancy.analysis import distorted_files

        c_max = distorted_files(placement, worst)
    else:
        row = distortion(placement, q)
        worst, c_max = list(row.adversaries), row.c_max
    choice = "worst_case" if detox_attack else normalize_name(args.adversary_choice)
    choice = {"hard_coded": "worst_case"}.get(choice, choice)
    if choice not in ("worst_case", "random"):
        raise ConfigError(
            f"redundancy_args.adversary_choice must be worst_case or random, got "
            f"{args.adversary_choice!r}"
        )
    f = c_max if args.aggregator_f is None else int(args.aggregator_f)
    attack = _attack_name(args)
    from shieldwall.algorithms.params import check_params, convert_params
    from shieldwall.attacks import ATTACKS

    check_params(ATTACKS.entry(attack), args.attack_params, "redundancy_args.attack_params")
    attack_params = convert_params(ATTACKS.entry(attack), dict(args.attack_params),
                                   "redundancy_args.attack_params")
    return RedundantSetup(
        placement=placement,
        approach=approach,
        q=q,
        c_max=c_max,
        worst_case=sorted(worst),
        adversary_choice=choice,
        attack=attack,
        aggregator=_aggregator_name(args, approach),
        f=f,
        attack_params=attack_params,
    )


def args_from_byzshield(options: dict[str, Any], **overrides: Any) -> RedundancyArgs:
    """A ``redundancy_args`` section from ByzShield-style options (dashed or underscore keys).

    ``lis-simulation`` accepts ByzShield's ``simulate``/``no`` as well as booleans;
    ``byzantine-gen`` accepts ``random``/``hard_coded``. ``enable`` defaults to True.
    """
    values: dict[str, Any] = {"enable": True}
    fields = set(RedundancyArgs.__dataclass_fields__)
    for key, value in {**options, **overrides}.items():
        name = DASHED_KEYS.get(key, key.replace("-", "_"))
        if name not in fields:
            raise ConfigError(
                f"unknown redundancy option {key!r}; known: {', '.join(sorted(fields))} "
                f"(ByzShield spellings: {', '.join(DASHED_KEYS)})"
            )
        if name == "lis_simulation" and isinstance(value, str):
            value = value.strip().lower() in ("simulate", "true", "yes")
        if name == "adversary_choice" and normalize_name(str(value)) == "hard_coded":
            value = "worst_case"
        values[name] = value
    return RedundancyArgs(**values)
