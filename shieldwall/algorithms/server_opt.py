r"""Server optimizers of FedOpt (Reddi et al., "Adaptive Federated Optimization", ICLR 2021).

The server treats the negated aggregate of the clients' model changes as a gradient,

.. math::
    g_t = -\mathrm{AGG}(\Delta_1, \dots, \Delta_n) = \theta_t - \bar\theta_{t+1},

and applies one step of an optimizer with learning rate :math:`\eta` = ``server_lr``. As in
FedML's ``FedOptAPI`` the steps of ``sgd`` (with ``server_momentum``: FedAvgM), ``adam`` and
``adagrad`` are ``torch.optim``'s, with torch's default hyper-parameters, so a FedML user's
``server_optimizer``/``server_lr`` mean the same here. ``yogi`` (not in torch, nor in FedML) is
Algorithm 2 of Reddi et al.:

.. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = v_{t-1} - (1-\beta_2)\, g_t^2 \odot \mathrm{sign}(v_{t-1} - g_t^2),\quad
    \theta_{t+1} = \theta_t - \eta\, m_t / (\sqrt{v_t} + \tau),

with the paper's :math:`\beta_1 = 0.9`, :math:`\beta_2 = 0.99`, :math:`\tau = 10^{-3}` and
:math:`v_{-1} = \tau^2`. With ``sgd``, :math:`\eta = 1` and no momentum FedOpt is FedAvg.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from shieldwall.registry import Registry

__all__ = ["SERVER_OPTIMIZERS", "Yogi", "ServerOptimizer"]

SERVER_OPTIMIZERS: Registry = Registry("server optimizer")


class Yogi(torch.optim.Optimizer):
    """Yogi as in Reddi et al. 2021, Algorithm 2 (no bias correction, ``v`` starts at τ²)."""

    def __init__(self, params: Any, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.99),
                 tau: float = 1e-3) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "tau": tau})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        del closure
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.full_like(p, group["tau"] ** 2)
                m, v = state["m"], state["v"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                g2 = g * g
                v.sub_((1 - b2) * g2 * torch.sign(v - g2))
                p.sub_(group["lr"] * m / (v.sqrt() + group["tau"]))


@SERVER_OPTIMIZERS.register("sgd")
def sgd(params: list[Tensor], lr: float, momentum: float) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` with ``server_momentum`` (FedAvgM; with lr 1 and no momentum, FedAvg)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


@SERVER_OPTIMIZERS.register("adam")
def adam(params: list[Tensor], lr: float, momentum: float) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` with torch's default betas (FedAdam); ``server_momentum`` unused."""
    return torch.optim.Adam(params, lr=lr)


@SERVER_OPTIMIZERS.register("adagrad")
def adagrad(params: list[Tensor], lr: float, momentum: float) -> torch.optim.Optimizer:
    """``torch.optim.Adagrad`` (FedAdagrad); ``server_momentum`` unused."""
    return torch.optim.Adagrad(params, lr=lr)


@SERVER_OPTIMIZERS.register("yogi")
def yogi(params: list[Tensor], lr: float, momentum: float) -> torch.optim.Optimizer:
    """:class:`Yogi`, Algorithm 2 of Reddi et al. (FedYogi); ``server_momentum`` unused."""
    return Yogi(params, lr=lr)


class ServerOptimizer:
    """One server optimizer over the flat global vector.

    Args:
        name: ``sgd``, ``adam``, ``adagrad`` or ``yogi``.
        lr: the server learning rate η.
        momentum: SGD's momentum (ignored by the adaptive optimizers, as in FedML's FedOpt).
        dim, dtype, device: the global vector's layout.
    """

    def __init__(self, name: str, lr: float, momentum: float, dim: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.x = torch.zeros(dim, dtype=dtype, device=device, requires_grad=True)
        self.opt = SERVER_OPTIMIZERS.get(name)([self.x], lr, momentum)

    def step(self, params: Tensor, aggregate: Tensor) -> Tensor:
        """θ_{t+1} from θ_t = ``params`` and the aggregate change (pseudo-gradient −aggregate)."""
        with torch.no_grad():
            self.x.copy_(params)
        self.x.grad = (-aggregate).to(self.x.dtype).clone()
        self.opt.step()
        return self.x.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.opt.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.opt.load_state_dict(state)
