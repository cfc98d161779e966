r"""Optimizers and learning-rate schedules beyond ``torch.optim``'s defaults.

* :class:`~shieldwall.optim.lamb.Lamb` (You et al. 2020), the optimizer of BTARD's ALBERT runs;
* :func:`build_optimizer`: ``sgd``, ``adam``, ``adamw`` or ``lamb`` from ``train_args``, with
  BERT's convention for ``adamw``/``lamb`` of no weight decay on one-dimensional tensors (biases,
  layer norms);
* :func:`lr_factor`: linear warm-up then constant or linear decay to 0 (BERT/ALBERT,
  ``transformers.get_linear_schedule_with_warmup``):

.. math::
    \mathrm{factor}(s) = \begin{cases} s / w & s < w \\
    1 & \text{constant} \\ \max\left(0, \frac{T - s}{T - w}\right) & \text{linear} \end{cases}

  where :math:`s` counts optimizer steps from 0, :math:`w` = ``warmup_steps`` and :math:`T` the
  total number of steps;
* :class:`TensorwiseStepper`: the server optimizer of PS-SGD/BTARD over the model's own tensor
  shapes (LAMB's trust ratio is per tensor), with gradient clipping and the schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from shieldwall.optim.lamb import Lamb

__all__ = ["Lamb", "build_optimizer", "lr_factor", "TensorwiseStepper", "needs_stepper"]

OPTIMIZERS = ("sgd", "adam", "adamw", "lamb")


def lr_factor(step: int, warmup: int, total: int, schedule: str = "constant") -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup  # step 0 already moves (HF counts from 1 after its step)
    if schedule == "linear":
        return max(0.0, (total - step) / max(total - warmup, 1))
    return 1.0


def _groups(params: Sequence[Tensor], weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(params: Sequence[Tensor], args: Any, lr: float | None = None) -> Any:
    """The optimizer ``args.client_optimizer`` names, over ``params`` (see module docstring)."""
    name = str(args.client_optimizer).lower()
    lr = args.learning_rate if lr is None else lr
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=args.momentum,
                               weight_decay=args.weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=args.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(_groups(params, args.weight_decay), lr=lr, eps=1e-6)
    if name == "lamb":
        return Lamb(_groups(params, args.weight_decay), lr=lr,
                    clamp_value=float(getattr(args, "lamb_clamp_value", 10.0)))
    raise ValueError(
        f"train_args.client_optimizer: {name!r} is not one of {', '.join(OPTIMIZERS)}"
    )


def needs_stepper(args: Any) -> bool:
    """Whether PS-SGD's server must step tensor by tensor (new optimizers, schedule, clipping)."""
    return (
        str(args.client_optimizer).lower() in ("adamw", "lamb")
        or bool(getattr(args, "warmup_steps", 0))
        or getattr(args, "lr_schedule", "constant") != "constant"
        or getattr(args, "max_grad_norm", None) is not None
    )


class TensorwiseStepper:
    """Steps the model's parameter shapes from a flat aggregated gradient.

    Args:
        shapes_of: the live parameters whose shapes (and order) the flat vector follows.
        args: ``train_args`` (optimizer, learning rate, schedule, clipping, ``comm_round``).
    """

    def __init__(self, shapes_of: Sequence[Tensor], args: Any) -> None:
        self.args = args
        self.params = [nn.Parameter(torch.zeros_like(p)) for p in shapes_of]
        self.sizes = [p.numel() for p in shapes_of]
        self.optimizer = build_optimizer(self.params, args)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.num_steps = 0

    def step(self, flat_params: Tensor, flat_grad: Tensor) -> Tensor:
        """The next flat parameters after one optimizer step with ``flat_grad``."""
        a = self.args
        with torch.no_grad():
            for p, v in zip(self.params, flat_params.split(self.sizes), strict=True):
                p.copy_(v.view_as(p))
        for p, g in zip(self.params, flat_grad.split(self.sizes), strict=True):
            p.grad = g.view_as(p).to(p.dtype).clone()
        if a.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, float(a.max_grad_norm))
        factor = lr_factor(self.num_steps, a.warmup_steps, a.comm_round, a.lr_schedule)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        self.optimizer.step()
        self.num_steps += 1
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "num_steps": self.num_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_steps = int(state.get("num_steps", 0))
