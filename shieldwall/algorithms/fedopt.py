r"""FedOpt (Reddi et al., "Adaptive Federated Optimization", ICLR 2021): FedAvg's clients, an
optimizer at the server.

Clients train exactly as in :class:`~shieldwall.algorithms.fedavg.FedAvg`. The server aggregates
their changes (robustly, when a defense is on) and, instead of adding the aggregate, takes one
step of ``train_args.server_optimizer`` with learning rate ``server_lr`` on the pseudo-gradient
:math:`g_t = -\mathrm{AGG}(\Delta)` (:mod:`shieldwall.algorithms.server_opt`). FedML's names:
``federated_optimizer: FedOpt`` with ``server_optimizer`` ``sgd`` (``server_momentum``: FedAvgM),
``adam`` (FedAdam), ``adagrad`` (FedAdagrad) or ``yogi`` (FedYogi); ``FedAdam``, ``FedYogi``,
``FedAdagrad`` and ``FedAvgM`` select the optimizer by name. The optimizer's moments are server
state and are checkpointed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from shieldwall.algorithms import ALGORITHMS
from shieldwall.algorithms.fedavg import FedAvg
from shieldwall.algorithms.server_opt import SERVER_OPTIMIZERS, ServerOptimizer
from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import TrainArgs
from shieldwall.registry import UnknownNameError

__all__ = ["FedOpt", "FedAdam", "FedYogi", "FedAdagrad", "FedAvgM"]


@ALGORITHMS.register("FedOpt", aliases=("fedopt", "FedOpt_seq"))
class FedOpt(FedAvg):
    """FedAvg's local training; ``server_optimizer`` steps the global model."""

    name = "FedOpt"
    optimizer_name: ClassVar[str | None] = None
    """Fixed optimizer of the named variants (``None``: ``train_args.server_optimizer``)."""

    def __init__(self, train_args: TrainArgs, model: nn.Module, device: torch.device) -> None:
        super().__init__(train_args, model, device)
        name = self.optimizer_name or str(train_args.server_optimizer)
        try:
            SERVER_OPTIMIZERS.get(name)
        except UnknownNameError as exc:
            raise ConfigError(f"train_args.server_optimizer: {exc}") from None
        vector = self.flat.vector()
        self.server_opt = ServerOptimizer(
            name, train_args.server_lr, train_args.server_momentum, vector.numel(),
            vector.dtype, vector.device,
        )

    def server_step(self, params: Tensor, aggregate: Tensor, round: int) -> Tensor:
        return self.server_opt.step(params, aggregate)

    def state_dict(self) -> dict[str, Any]:
        return {"server_optimizer": self.server_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.server_opt.load_state_dict(state.get("server_optimizer", {}))


@ALGORITHMS.register("FedAdam", aliases=("fed_adam",))
class FedAdam(FedOpt):
    """FedOpt with the ``adam`` server optimizer (Reddi et al., 2021)."""

    optimizer_name = "adam"


@ALGORITHMS.register("FedYogi", aliases=("fed_yogi",))
class FedYogi(FedOpt):
    """FedOpt with the ``yogi`` server optimizer (Reddi et al., 2021)."""

    optimizer_name = "yogi"


@ALGORITHMS.register("FedAdagrad", aliases=("fed_adagrad",))
class FedAdagrad(FedOpt):
    """FedOpt with the ``adagrad`` server optimizer (Reddi et al., 2021)."""

    optimizer_name = "adagrad"


@ALGORITHMS.register("FedAvgM", aliases=("fedavgm",))
class FedAvgM(FedOpt):
    """FedOpt with ``sgd`` and ``server_momentum``: FedAvg with server momentum (Hsu et al.,
    2019)."""

    optimizer_name = "sgd"
