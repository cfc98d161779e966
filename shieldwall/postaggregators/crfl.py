r"""CRFL's training-time step: clip the global model's norm, then perturb it with Gaussian noise.

Xie, Chen, Chen, Li (2021), "CRFL: Certifiably Robust Federated Learning against Backdoor
Attacks", ICML. After aggregation in round :math:`t` the server clips the new global model
:math:`\theta` to norm :math:`\rho_t` and adds isotropic Gaussian noise:

.. math::
    \theta \leftarrow \frac{\theta}{\max(1, \lVert\theta\rVert_2 / \rho_t)}
    + \mathcal{N}(0, \sigma^2 I),

except in the last round (:math:`t = T`), which is clipped but not perturbed. The authors' code
grows the threshold with the round for its data sets (``threshold_schedule``):
MNIST :math:`\rho_t = 0.1 t + 2`, EMNIST :math:`0.25 t + 4`, LOAN :math:`0.025 t + 2`, with
:math:`t = \text{round} + 1`; a configured ``clip_threshold`` caps it (the smaller one is used),
or is the threshold on its own. The certification half of CRFL (parameter smoothing of many
noisy test-time models) is not part of training and is not implemented here.

The step works on the model: with ``reference`` (the current global parameters) the model is
``reference + server_lr · aggregate`` (see :mod:`._model`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.postaggregators import POSTAGGREGATORS
from shieldwall.postaggregators._model import check_aggregate, gaussian_like, to_model, to_update

__all__ = ["crfl", "crfl_threshold", "THRESHOLD_SCHEDULES"]

#: ``name → (slope, intercept)`` of CRFL's per-data-set threshold ρ_t = slope · t + intercept.
THRESHOLD_SCHEDULES: dict[str, tuple[float, float]] = {
    "mnist": (0.1, 2.0),
    "emnist": (0.25, 4.0),
    "loan": (0.025, 2.0),
}


def crfl_threshold(
    round: int, clip_threshold: float | None, threshold_schedule: str | None
) -> float:
    """ρ for ``round`` (0-based): the schedule's value, capped by ``clip_threshold``."""
    values = []
    if threshold_schedule is not None:
        key = str(threshold_schedule).lower()
        if key not in THRESHOLD_SCHEDULES:
            raise ValueError(
                f"crfl: unknown threshold_schedule {threshold_schedule!r}; "
                f"known: {', '.join(THRESHOLD_SCHEDULES)}"
            )
        slope, intercept = THRESHOLD_SCHEDULES[key]
        values.append(slope * (round + 1) + intercept)
    if clip_threshold is not None:
        if clip_threshold <= 0:
            raise ValueError(f"crfl: clip_threshold must be > 0, got {clip_threshold}")
        values.append(float(clip_threshold))
    if not values:
        raise ValueError("crfl needs clip_threshold (or a threshold_schedule: mnist, emnist, loan)")
    return min(values)


@POSTAGGREGATORS.register("crfl", aliases=("crfl_clip_noise",))
def crfl(
    aggregate: Tensor,
    *,
    reference: Tensor | None = None,
    generator: torch.Generator | None = None,
    round: int = 0,
    clip_threshold: float | None = None,
    sigma: float = 0.01,
    threshold_schedule: str | None = None,
    num_rounds: int | None = None,
    server_lr: float = 1.0,
) -> Tensor:
    """Clip the next global model to norm ρ_t and add N(0, σ²) noise (not in the last round).

    Args:
        aggregate: aggregated update ``(d,)``.
        reference: current global parameters (``None``: the model is ``server_lr · aggregate``).
        generator: seeded RNG of the noise.
        round: current round (0-based).
        clip_threshold: ρ, or the cap of the schedule's ρ_t.
        sigma: noise standard deviation σ (CRFL's code: 0.01).
        threshold_schedule: ``mnist``, ``emnist`` or ``loan``: the authors' growing ρ_t.
        num_rounds: T; round ``T − 1`` is clipped without noise (``None``: always noise).
        server_lr: η of ``θ_{t+1} = θ_t + η · agg``.

    >>> out = crfl(torch.tensor([3.0, 4.0]), round=4, clip_threshold=2.5, num_rounds=5)
    >>> out.tolist()
    [1.5, 2.0]
    """
    check_aggregate(aggregate, "crfl")
    if sigma < 0:
        raise ValueError(f"crfl: sigma must be >= 0, got {sigma}")
    rho = crfl_threshold(round, clip_threshold, threshold_schedule)
    model = to_model(aggregate, reference, server_lr, "crfl")
    norm = float(torch.linalg.vector_norm(model))
    if norm > rho:
        model = model * (rho / norm)
    last = num_rounds is not None and round >= num_rounds - 1
    if sigma > 0 and not last:
        model = model + gaussian_like(model, sigma, generator, "crfl")
    return to_update(model, reference, server_lr, "crfl")
