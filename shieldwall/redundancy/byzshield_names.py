"""ByzShield's command-line names → shieldwall names (name mapping only, no training).

The authors' ``run_pytorch.sh`` (github.com/kkonstantinidis/ByzShield) configures a run with:

=================== ========================================== ===================================
ByzShield flag      values                                     shieldwall
=================== ========================================== ===================================
``approach``        baseline, mols, rama_one, rama_two,        placement name, and whether
                    draco-lite (draco_lite), draco_lite_attack, ByzShield's attack on DETOX picks
                    maj_vote                                   the adversaries (:data:`APPROACHES`)
``err-mode``        rev_grad, constant                         attack ``reversed_gradient``,
                                                               ``constant``
``lis-simulation``  simulate, no                               attack ``alie`` (replaces err-mode)
``worker-fail``     q                                          number of adversaries
``group-size``      r                                          replication
``rama-m``          m                                          ``rama_two`` parameter ``m``
``mode``            coord-median, bulyan, multi-krum           aggregator ``median``, ``bulyan``,
                                                               ``multikrum``
``byzantine-gen``   random, hard_coded                         adversaries ``random`` or
                                                               ``worst_case`` (c_max set)
``detox-attack``    worst, benign, whole_group                 adversaries ``detox_worst``, …
=================== ========================================== ===================================

``draco_lite_attack`` is DETOX attacked by ByzShield's attack on DETOX, chosen by
``detox-attack``: ``worst`` (default) = r′ adversaries per group, group after group
(:func:`~.detox.detox_worst_adversaries`, c_max = ⌊q/r′⌋ groups), ``benign`` = one per group in
turn, ``whole_group`` = workers 0 … q − 1. Other approaches take ``byzantine-gen``: ``random``
(default; a fresh random set per iteration in ByzShield) or ``hard_coded`` (the paper's fixed
worst-case sets, i.e. :func:`~.analysis.worst_case_adversaries`). ``maj_vote`` is DETOX's
grouping with the majority vote and no robust aggregation afterwards (``aggregator="mean"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shieldwall.registry import closest, normalize_name

__all__ = [
    "APPROACHES",
    "ERR_MODES",
    "MODES",
    "BYZANTINE_GEN",
    "DETOX_ATTACKS",
    "ByzShieldSetup",
    "approach_to_placement",
    "err_mode_to_attack",
    "mode_to_aggregator",
    "from_byzshield",
]

#: approach → (placement name, ByzShield's attack on DETOX chooses the adversaries)
APPROACHES: dict[str, tuple[str, bool]] = {
    "baseline": ("baseline", False),
    "mols": ("mols", False),
    "rama_one": ("rama_one", False),
    "rama_two": ("rama_two", False),
    "draco-lite": ("detox", False),
    "draco_lite": ("detox", False),
    "draco_lite_attack": ("detox", True),
    "maj_vote": ("detox", False),
}
#: err-mode → attack name (shieldwall.attacks)
ERR_MODES: dict[str, str] = {"rev_grad": "reversed_gradient", "constant": "constant"}
#: mode → aggregator name (shieldwall.aggregators)
MODES: dict[str, str] = {"coord-median": "median", "bulyan": "bulyan", "multi-krum": "multikrum"}
#: byzantine-gen → adversary choice
BYZANTINE_GEN: dict[str, str] = {"random": "random", "hard_coded": "worst_case"}
#: detox-attack → adversary choice (only with approach draco_lite_attack)
DETOX_ATTACKS: dict[str, str] = {
    "worst": "detox_worst", "benign": "detox_benign", "whole_group": "detox_whole_group"
}


def _lookup(table: dict[str, Any], value: str, flag: str) -> Any:
    norm = {normalize_name(k): v for k, v in table.items()}
    key = normalize_name(value)
    if key in norm:
        return norm[key]
    hint = closest(str(value), list(table))
    msg = f"unknown ByzShield --{flag} {value!r}"
    if hint is not None:
        msg += f" (did you mean {hint!r}?)"
    raise ValueError(msg + f"; valid: {', '.join(table)}")


def approach_to_placement(approach: str) -> tuple[str, bool]:
    """``approach`` → (placement name, whether ByzShield's attack on DETOX is used)."""
    return _lookup(APPROACHES, approach, "approach")


def err_mode_to_attack(err_mode: str) -> str:
    return _lookup(ERR_MODES, err_mode, "err-mode")


def mode_to_aggregator(mode: str) -> str:
    return _lookup(MODES, mode, "mode")


@dataclass
class ByzShieldSetup:
    """A ByzShield run in shieldwall names."""

    placement: str
    num_workers: int
    replication: int
    placement_params: dict[str, Any] = field(default_factory=dict)
    num_adversaries: int = 0
    adversaries: str = "random"
    attack: str = "reversed_gradient"
    aggregator: str = "median"


def _flag(options: dict[str, Any], name: str, default: Any = None) -> Any:
    for key in (name, name.replace("-", "_")):
        if key in options:
            return options[key]
    return default


def from_byzshield(num_workers: int, options: dict[str, Any]) -> ByzShieldSetup:
    """Translate ByzShield flags (``approach``, ``err-mode``, ``lis-simulation``, ``worker-fail``,
    ``group-size``, ``rama-m``, ``mode``, ``byzantine-gen``, ``detox-attack``; ``-`` or ``_``
    spellings) for K = ``num_workers``.

    ByzShield's ``n`` counts the PS too: pass ``num_workers = n − 1``.
    """
    known = {"approach", "err-mode", "lis-simulation", "worker-fail", "group-size", "rama-m",
             "mode", "byzantine-gen", "detox-attack"}
    unknown = sorted(k for k in options if k.replace("_", "-") not in known)
    if unknown:
        raise ValueError(
            f"unknown ByzShield option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    placement, detox_attack = approach_to_placement(str(_flag(options, "approach", "baseline")))
    r = int(_flag(options, "group-size", 1))
    if placement == "baseline":
        r = 1
    params: dict[str, Any] = {}
    rama_m = _flag(options, "rama-m")
    if placement == "rama_two" and rama_m is not None:
        params["m"] = int(rama_m)
    lis = str(_flag(options, "lis-simulation", "no")).lower()
    if lis not in ("simulate", "no"):
        raise ValueError(f"ByzShield --lis-simulation must be 'simulate' or 'no', got {lis!r}")
    attack = "alie" if lis == "simulate" else err_mode_to_attack(
        str(_flag(options, "err-mode", "rev_grad"))
    )
    approach = normalize_name(str(_flag(options, "approach", "baseline")))
    mode = _flag(options, "mode", "coord-median")
    aggregator = "mean" if approach == "maj_vote" else mode_to_aggregator(str(mode))
    if detox_attack:
        choice = _lookup(DETOX_ATTACKS, str(_flag(options, "detox-attack", "worst")),
                         "detox-attack")
    else:
        choice = _lookup(BYZANTINE_GEN, str(_flag(options, "byzantine-gen", "random")),
                         "byzantine-gen")
    q = int(_flag(options, "worker-fail", 0))
    if not 0 <= q <= num_workers:
        raise ValueError(f"ByzShield --worker-fail must be in 0..{num_workers}, got {q}")
    return ByzShieldSetup(
        placement=placement,
        num_workers=int(num_workers),
        replication=r,
        placement_params=params,
        num_adversaries=q,
        adversaries=choice,
        attack=attack,
        aggregator=aggregator,
    )
