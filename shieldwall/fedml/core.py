"""FedML's ``fedml.core``: its extension points (``ClientTrainer``, ``ServerAggregator``, MLOps,
its own attacker/defender singletons) are not provided: local training is ``train_args``'
algorithm (FedAvg, FedProx, FedOpt…), aggregation is ``defense_args``' defense, attacks are
``attack_args`` (see docs/fedml_compat.md). Any name here is one error naming what to use."""

from __future__ import annotations

from typing import Any

from shieldwall.fedml._api import UnsupportedAPIError

__all__: list[str] = []


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    raise UnsupportedAPIError(
        f"fedml.core.{name} is a FedML API that shieldwall does not provide: local training is "
        "train_args.federated_optimizer (FedAvg, FedProx, FedOpt…), aggregation is "
        "defense_args.defense_type, attacks are attack_args (see docs/fedml_compat.md)")
