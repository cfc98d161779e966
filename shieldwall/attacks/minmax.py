"""Min-Max and Min-Sum (Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing model
poisoning attacks and defenses for federated learning", NDSS 2021).

Both are aggregation-rule-agnostic and omniscient (they use every honest update,
``omniscient=True``). Every Byzantine worker sends

.. math:: b = \\bar h - \\gamma\\, p ,

where :math:`\\bar h` is the honest mean and the deviation p is (param ``perturbation``)

* ``"unit_vec"`` (default): :math:`\\bar h / \\lVert \\bar h \\rVert` (the paper's inverse unit
  vector, :math:`\\nabla^p = -\\bar h/\\lVert\\bar h\\rVert`),
* ``"std"``: the coordinate-wise (unbiased) standard deviation of the honest updates
  (:math:`\\nabla^p = -\\sigma`),
* ``"sign"``: :math:`\\mathrm{sign}(\\bar h)` (:math:`\\nabla^p = -\\mathrm{sign}(\\bar h)`).

γ is the largest value for which b still looks like an honest update:

* **Min-Max**: :math:`\\max_i \\lVert b - h_i \\rVert \\le \\max_{i,j} \\lVert h_i - h_j \\rVert`
  (b is no farther from any honest update than the two farthest honest updates are apart);
* **Min-Sum**: :math:`\\sum_i \\lVert b - h_i \\rVert^2 \\le
  \\max_i \\sum_j \\lVert h_i - h_j \\rVert^2` (b's total squared distance is no larger than an
  honest update's). The paper states the bound with max; the authors' code compares against the
  *min* over honest updates (a stricter bound) — ``bound="min"`` reproduces that.

γ is found by the paper's (and its code's) halving search: start at γ = ``gamma_init``
(default 10) with step γ₀; at each step, if the constraint holds set γ_succ = γ and
γ += step/2, else γ −= step/2; halve the step; stop when ``|γ_succ − γ| ≤ tol`` (default 1e-5)
and return γ_succ (0 when no tried γ > 0 satisfied the constraint). The search therefore never
returns more than 2·γ₀. Squared distances are compared (the same order as distances).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._utils import check_honest, coordinate_std, repeat_row
from shieldwall.attacks.base import AttackContext

__all__ = ["minmax", "minsum", "deviation", "halving_search", "PERTURBATIONS"]

PERTURBATIONS: tuple[str, ...] = ("unit_vec", "std", "sign")
_MAX_STEPS = 200


def deviation(honest: Tensor, perturbation: str) -> Tensor:
    """The direction p subtracted from the honest mean (see the module docstring)."""
    mean = honest.mean(dim=0)
    kind = str(perturbation).strip().lower()
    if kind == "unit_vec":
        length = mean.norm()
        return mean / length if bool(length > 0) else torch.zeros_like(mean)
    if kind == "std":
        return coordinate_std(honest)
    if kind == "sign":
        return torch.sign(mean)
    raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")


def halving_search(satisfied: Callable[[float], bool], gamma_init: float, tol: float) -> float:
    """The paper's search for the largest γ with ``satisfied(γ)`` (see the module docstring)."""
    if not gamma_init > 0:
        raise ValueError(f"gamma_init must be > 0, got {gamma_init}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    gamma, step, succ = float(gamma_init), float(gamma_init), 0.0
    for _ in range(_MAX_STEPS):
        if abs(succ - gamma) <= tol:
            break
        if satisfied(gamma):
            succ = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return succ


def _working(honest: Tensor) -> Tensor:
    # Half-precision rows are searched in float32 (cdist has no half kernels on every device).
    return honest if honest.dtype in (torch.float32, torch.float64) else honest.float()


def _pairwise_sq(honest: Tensor) -> Tensor:
    # Exact differences (not the ‖a‖² + ‖b‖² − 2ab trick, which loses precision).
    return torch.cdist(honest, honest, compute_mode="donot_use_mm_for_euclid_dist").square()


def _sq_dist_to(honest: Tensor, row: Tensor) -> Tensor:
    return (honest - row).square().sum(dim=1)


@ATTACKS.register("minmax", aliases=("min_max",), kind="update", omniscient=True)
def minmax(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    perturbation: str = "unit_vec",
    gamma_init: float = 10.0,
    tol: float = 1e-5,
) -> Tensor:
    """Min-Max: mean − γ·p with max distance to an honest update ≤ max honest pairwise distance.

    Args:
        honest: ``(h, d)`` honest updates of the round.
        num_byzantine: rows to return.
        ctx: unused.
        perturbation: ``"unit_vec"``, ``"std"`` or ``"sign"``.
        gamma_init: the search's starting γ (results never exceed 2·gamma_init).
        tol: the search's stopping tolerance on γ.
    """
    check_honest(honest, num_byzantine, "minmax")
    rows = _working(honest)
    mean, p = rows.mean(dim=0), deviation(rows, perturbation)
    threshold = _pairwise_sq(rows).max()

    def satisfied(gamma: float) -> bool:
        return bool(_sq_dist_to(rows, mean - gamma * p).max() <= threshold)

    gamma = halving_search(satisfied, gamma_init, tol)
    return repeat_row(mean - gamma * p, num_byzantine).to(honest.dtype)


@ATTACKS.register("minsum", aliases=("min_sum",), kind="update", omniscient=True)
def minsum(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    perturbation: str = "unit_vec",
    gamma_init: float = 10.0,
    tol: float = 1e-5,
    bound: str = "max",
) -> Tensor:
    """Min-Sum: mean − γ·p with sum of squared distances ≤ an honest update's (max or min).

    Args:
        honest: ``(h, d)`` honest updates of the round.
        num_byzantine: rows to return.
        ctx: unused.
        perturbation: ``"unit_vec"``, ``"std"`` or ``"sign"``.
        gamma_init: the search's starting γ (results never exceed 2·gamma_init).
        tol: the search's stopping tolerance on γ.
        bound: ``"max"`` (the paper) or ``"min"`` (the authors' code) over honest updates of
            their sum of squared distances to the others.
    """
    check_honest(honest, num_byzantine, "minsum")
    rows = _working(honest)
    mean, p = rows.mean(dim=0), deviation(rows, perturbation)
    scores = _pairwise_sq(rows).sum(dim=1)
    kind = str(bound).strip().lower()
    if kind == "max":
        threshold = scores.max()
    elif kind == "min":
        threshold = scores.min()
    else:
        raise ValueError(f"minsum: bound must be 'max' or 'min', got {bound!r}")

    def satisfied(gamma: float) -> bool:
        return bool(_sq_dist_to(rows, mean - gamma * p).sum() <= threshold)

    gamma = halving_search(satisfied, gamma_init, tol)
    return repeat_row(mean - gamma * p, num_byzantine).to(honest.dtype)
