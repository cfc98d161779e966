"""Drivers: what runs a whole training run, one registry entry each (as aggregators are).

A driver is one function with the contract of :class:`Driver`::

    @DRIVERS.register("btard", claims=is_btard, claim="train_args.federated_optimizer: BTARD")
    def btard(cfg: ExperimentConfig, *, resume: str | Path | None = None) -> dict[str, Any]: ...

It builds what it needs from ``cfg``, runs to ``train_args.comm_round`` (continuing the run
directory ``resume`` when given) and returns the run's summary (``{}`` on a process that does not
write the run directory). The shared plumbing — run directory, round loop, checkpoints — is
:mod:`shieldwall.rundir`, below every driver; no driver imports an entry point.

Which driver runs a config: the one whose ``claims(cfg)`` predicate holds (``claim`` says in
words what it looks at); when none does, the entry registered with ``default=True`` (the server
round loop of :mod:`.rounds`). A config that two drivers claim is an error naming both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from shieldwall.config import ConfigError, ExperimentConfig
from shieldwall.registry import Entry, Registry, import_submodules

__all__ = ["DRIVERS", "Driver", "select_driver"]


class Driver(Protocol):
    """Runs ``cfg`` to its last round; returns the summary (also in ``summary.json``)."""

    def __call__(
        self, cfg: ExperimentConfig, *, resume: str | Path | None = None
    ) -> dict[str, Any]: ...


DRIVERS: Registry[Driver] = Registry("driver")


def select_driver(cfg: ExperimentConfig) -> Entry[Driver]:
    """The driver entry that runs ``cfg`` (see the module docstring)."""
    claimed = []
    default = None
    for entry in DRIVERS:
        claims: Callable[[ExperimentConfig], bool] | None = entry.meta.get("claims")
        if claims is not None and claims(cfg):
            claimed.append(entry)
        if entry.meta.get("default"):
            default = entry
    if len(claimed) > 1:
        raise ConfigError(
            "the config asks for more than one driver: "
            + " and ".join(f"{e.name} ({e.meta.get('claim', 'its own keys')})" for e in claimed)
            + "; keep one of them"
        )
    if claimed:
        return claimed[0]
    if default is None:  # pragma: no cover - the round loop is always registered
        raise ConfigError(f"no driver runs this config; drivers: {', '.join(DRIVERS.names())}")
    return default


import_submodules(__name__)
