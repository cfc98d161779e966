"""DETOX placement (Rajput, Wang, Charles & Papailiopoulos, NeurIPS 2019), a.k.a. draco-lite.

The K workers form K/r disjoint groups of r consecutive workers (group g = workers
``g·r … g·r + r − 1``, as in ByzShield's ``group_assign``); all members of a group compute the
same data, so each group is one file (``files_per_group`` > 1 splits a group's data into that
many files, all held by every member). F = (K/r)·files_per_group, load l = files_per_group.

Worst case (closed form): a group's files are lost once r′ = ⌊r/2⌋ + 1 of its members lie, and a
liar helps only its own group, so q adversaries control ⌊q/r′⌋ groups:
c_max(q) = min(⌊q/r′⌋, K/r) · files_per_group. The adversary set attains it by taking the first
r′ workers of groups 0, 1, … and putting the q mod r′ left over in the next group (ByzShield's
``detox-attack worst``). ByzShield's two other attacks on DETOX: ``benign`` spreads the
adversaries one per group (workers 0, r, 2r, …, then 1, r + 1, …), so no group is lost while
q < (r′ − 1)·K/r + 1; ``whole_group`` takes workers 0 … q − 1, filling whole groups (it loses
⌊q/r⌋ groups, plus one if q mod r ≥ r′).
"""

from __future__ import annotations

from shieldwall.redundancy.placement import (
    PLACEMENTS,
    Placement,
    PlacementError,
    check_sizes,
    majority_threshold,
)

__all__ = [
    "detox",
    "detox_cmax",
    "detox_worst_adversaries",
    "detox_benign_adversaries",
    "detox_whole_group_adversaries",
    "detox_adversaries",
    "DETOX_ATTACK_MODES",
]


@PLACEMENTS.register("detox", aliases=("draco-lite", "draco_lite", "draco"))
def detox(num_workers: int, replication: int, *, files_per_group: int = 1) -> Placement:
    """K/r groups of r workers; every member of a group holds the group's files."""
    k, r = check_sizes("detox", num_workers, replication)
    fpg = int(files_per_group)
    if fpg < 1:
        raise PlacementError(f"detox: files_per_group must be ≥ 1, got {files_per_group}")
    if k % r:
        ks = ", ".join(str(r * g) for g in range(1, 8))
        raise PlacementError(
            f"detox needs num_workers divisible by replication (K/r groups of r workers); "
            f"K={k}, r={r} is not; valid K for r={r}: {ks}, …"
        )
    groups = k // r
    rows = [[g * fpg + j for j in range(fpg)] for g in range(groups) for _ in range(r)]
    return Placement(
        rows,
        num_files=groups * fpg,
        name="detox",
        params={"files_per_group": fpg, "groups": groups},
        orbit_reps=(0,),
        classes=[[g * r + j for g in range(groups)] for j in range(r)],
    )


def detox_cmax(q: int, num_workers: int, replication: int, files_per_group: int = 1) -> int:
    """Closed form c_max(q) = min(⌊q/r′⌋, K/r) · files_per_group, r′ = ⌊r/2⌋ + 1."""
    groups = num_workers // replication
    return min(q // majority_threshold(replication), groups) * files_per_group


def detox_worst_adversaries(q: int, num_workers: int, replication: int) -> list[int]:
    """r′ workers of each of the first groups, the remainder in the next (then anything left)."""
    r, rp = replication, majority_threshold(replication)
    if not 0 <= q <= num_workers:
        raise ValueError(f"q must be in 0..{num_workers}, got {q}")
    order = [g * r + j for g in range(num_workers // r) for j in range(rp)]
    order += [w for w in range(num_workers) if w not in set(order)]
    return sorted(order[:q])


def _check_q(q: int, num_workers: int) -> None:
    if not 0 <= q <= num_workers:
        raise ValueError(f"q must be in 0..{num_workers}, got {q}")


def detox_benign_adversaries(q: int, num_workers: int, replication: int) -> list[int]:
    """One adversary per group in turn: workers 0, r, 2r, …, then 1, r + 1, … (ByzShield)."""
    _check_q(q, num_workers)
    r = replication
    order = [x for start in range(r) for x in range(start, num_workers, r)]
    return sorted(order[:q])


def detox_whole_group_adversaries(q: int, num_workers: int, replication: int) -> list[int]:
    """Workers 0 … q − 1: whole groups, one after the other (ByzShield's ``whole_group``)."""
    _check_q(q, num_workers)
    return list(range(q))


DETOX_ATTACK_MODES = {
    "worst": detox_worst_adversaries,
    "benign": detox_benign_adversaries,
    "whole_group": detox_whole_group_adversaries,
}
"""ByzShield's ``detox-attack`` values → adversary set builders ``fn(q, K, r)``."""


def detox_adversaries(mode: str, q: int, num_workers: int, replication: int) -> list[int]:
    """The adversary set of ByzShield's attack ``mode`` on DETOX (``worst``, ``benign``,
    ``whole_group``)."""
    key = mode.strip().lower().replace("-", "_")
    if key not in DETOX_ATTACK_MODES:
        raise ValueError(
            f"unknown detox-attack {mode!r}; valid: {', '.join(DETOX_ATTACK_MODES)}"
        )
    return DETOX_ATTACK_MODES[key](q, num_workers, replication)
