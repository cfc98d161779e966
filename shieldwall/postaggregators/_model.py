"""Moving between the aggregated update and the global model it produces (private helpers).

FedAvg's server half computes ``θ_{t+1} = θ_t + η · agg`` (η = ``train_args.server_lr``). Steps
defined on the *model* (CRFL clips the model's norm; weak DP perturbs the model) map the update to
the model, transform it and map back: ``agg' = (T(θ_t + η·agg) − θ_t) / η``. Without a reference
(gradient updates) the model is taken as ``η · agg`` around zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["to_model", "to_update", "gaussian_like", "check_aggregate"]


def check_aggregate(aggregate: Tensor, step: str) -> None:
    if not isinstance(aggregate, Tensor) or aggregate.dim() != 1:
        shape = tuple(aggregate.shape) if isinstance(aggregate, Tensor) else type(aggregate)
        raise ValueError(f"{step}: the aggregate must be a (d,) tensor, got {shape}")


def _reference(aggregate: Tensor, reference: Tensor | None, step: str) -> Tensor:
    if reference is None:
        return torch.zeros_like(aggregate)
    ref = reference.reshape(-1).to(dtype=aggregate.dtype, device=aggregate.device)
    if ref.numel() != aggregate.numel():
        raise ValueError(
            f"{step}: reference has {ref.numel()} entries but the aggregate has {aggregate.numel()}"
        )
    return ref


def to_model(aggregate: Tensor, reference: Tensor | None, server_lr: float, step: str) -> Tensor:
    """``θ_t + η · agg``: the global model the server half would produce."""
    if server_lr <= 0:
        raise ValueError(f"{step}: server_lr must be > 0, got {server_lr}")
    return _reference(aggregate, reference, step) + server_lr * aggregate


def to_update(model: Tensor, reference: Tensor | None, server_lr: float, step: str) -> Tensor:
    """``(θ' − θ_t) / η``: the aggregated update that produces the global model ``θ'``."""
    return (model - _reference(model, reference, step)) / server_lr


def gaussian_like(like: Tensor, std: float, generator: torch.Generator | None, step: str) -> Tensor:
    """``std · N(0, I)`` shaped like ``like``, drawn in float32/float64 from ``generator``."""
    if generator is None:
        raise ValueError(f"{step} adds noise and needs a seeded generator (the global RNG is "
                         "never used)")
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    noise = torch.randn(like.shape, generator=generator, dtype=dtype, device=generator.device)
    return (std * noise).to(dtype=like.dtype, device=like.device)
