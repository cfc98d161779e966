"""FedML's ``fedml.cross_silo.hierarchical``: a silo ``Client`` with DDP trainers, and the
``Server``. See :mod:`shieldwall.fedml.runner` for how the processes are started."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shieldwall.fedml.runner import run_client, run_server

__all__ = ["Client", "Server"]


class Client:
    """``Client(args, device, dataset, model).run()``: silo ``args.rank`` (FedML's API)."""

    def __init__(self, args: Any, device: torch.device, dataset: Any, model: nn.Module,
                 model_trainer: Any = None) -> None:
        if model_trainer is not None:
            from shieldwall.config.loader import ConfigError

            raise ConfigError("Client(model_trainer=…): custom FedML trainers are not supported; "
                              "local training is train_args' algorithm")
        self.args, self.device, self.dataset, self.model = args, device, dataset, model

    def run(self) -> int:
        return run_client(self.args, self.device, self.dataset, self.model)


class Server:
    """``Server(args, device, dataset, model).run()``: the cross-silo server (FedML's API)."""

    def __init__(self, args: Any, device: torch.device, dataset: Any, model: nn.Module,
                 server_aggregator: Any = None) -> None:
        if server_aggregator is not None:
            from shieldwall.config.loader import ConfigError

            raise ConfigError("Server(server_aggregator=…): custom FedML aggregators are not "
                              "supported; aggregation is defense_args' defense")
        self.args, self.device, self.dataset, self.model = args, device, dataset, model

    def run(self) -> dict:
        return run_server(self.args, self.device, self.dataset, self.model)
