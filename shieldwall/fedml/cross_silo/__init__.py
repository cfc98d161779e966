"""FedML's ``fedml.cross_silo``: ``Client``/``Server`` (one process per silo) and
``hierarchical`` (silos with DDP trainers); both run :mod:`shieldwall.fedml.runner`."""

from __future__ import annotations

from typing import Any

from shieldwall.fedml._api import missing
from shieldwall.fedml.cross_silo import hierarchical
from shieldwall.fedml.cross_silo.hierarchical import Client, Server

__all__ = ["Client", "Server", "hierarchical"]


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    raise missing("fedml.cross_silo", name, __all__)
