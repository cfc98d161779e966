r"""LAMB: layer-wise adaptive moments for large-batch training (You et al., ICLR 2020).

For each parameter tensor :math:`x` (one "layer") with gradient :math:`g` at step :math:`t`:

.. math::
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \\
    \hat m_t &= m_t / (1 - \beta_1^t), \qquad \hat v_t = v_t / (1 - \beta_2^t), \\
    u_t &= \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} + \lambda x_{t-1}, \\
    x_t &= x_{t-1} - \eta \, \frac{\phi(\lVert x_{t-1} \rVert)}{\lVert u_t \rVert} \, u_t,
    \qquad \phi(z) = \min(z, c),

(Algorithm 2 of the paper, with bias correction). The trust ratio
:math:`\phi(\lVert x \rVert) / \lVert u \rVert` is replaced by 1 when either norm is 0 (fresh zero
tensors such as biases start with plain Adam steps), as in the reference implementations.
:math:`c` is ``clamp_value`` (10 in the paper's :math:`\phi`; BTARD/hivemind's ALBERT recipe
uses ``torch_optimizer.Lamb`` with ``clamp_value=10000``). With ``bias_correction=False`` the
moments are used as they are. Weight decay :math:`\lambda` is decoupled (added to the update, not
the gradient) as in AdamW. ``exclude_from_trust`` is not needed: param groups can set
``weight_decay=0`` (biases, layer norms) as BERT does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["Lamb", "lamb_step"]


def lamb_step(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int, *,
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
    clamp_value: float, bias_correction: bool = True,
) -> None:
    """One LAMB update of ``param`` in place (moments updated in place too)."""
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m, v = exp_avg, exp_avg_sq
    if bias_correction:
        m = m / (1 - beta1**step)
        v = v / (1 - beta2**step)
    update = m / (v.sqrt() + eps)
    if weight_decay:
        update = update + weight_decay * param
    w_norm = param.norm().clamp(max=clamp_value)
    u_norm = update.norm()
    trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
    param.sub_(update * (lr * trust))


class Lamb(torch.optim.Optimizer):
    """LAMB (see module docstring).

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\eta` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2)` (default (0.9, 0.999)).
        eps: :math:`\\epsilon` (default 1e-6, as BERT's LAMB).
        weight_decay: decoupled :math:`\\lambda` (default 0).
        clamp_value: :math:`c` in :math:`\\phi(z) = \\min(z, c)` (default 10).
        bias_correction: divide the moments by :math:`1 - \\beta^t` (default True).
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6, weight_decay: float = 0.0, clamp_value: float = 10.0,
        bias_correction: bool = True,
    ) -> None:
        if lr < 0:
            raise ValueError(f"Lamb: lr must be >= 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Lamb: betas must lie in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0 or clamp_value <= 0:
            raise ValueError(
                f"Lamb: eps, weight_decay must be >= 0 and clamp_value > 0, got eps={eps}, "
                f"weight_decay={weight_decay}, clamp_value={clamp_value}"
            )
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        clamp_value=clamp_value, bias_correction=bias_correction)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                lamb_step(
                    p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"],
                    lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                    weight_decay=group["weight_decay"], clamp_value=group["clamp_value"],
                    bias_correction=group["bias_correction"],
                )
        return loss
