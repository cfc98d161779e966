"""FedML's ``fedml.simulation``: its simulator classes are not provided; simulations run through
``FedMLRunner`` or ``fedml.run_simulation()`` (``training_type: simulation``)."""

from __future__ import annotations

from typing import Any

from shieldwall.fedml._api import missing

__all__ = ["SimulatorSingleProcess", "SimulatorMPI"]


def _runner(*args: Any, **kwargs: Any) -> Any:
    from shieldwall.fedml.runner import FedMLRunner

    return FedMLRunner(*args, **kwargs)


SimulatorSingleProcess = _runner
"""FedML's single-process simulator: ``SimulatorSingleProcess(args, device, dataset, model)``
is a :class:`~shieldwall.fedml.runner.FedMLRunner` (call ``.run()``)."""
SimulatorMPI = _runner
"""FedML's MPI simulator (under mpirun): a :class:`~shieldwall.fedml.runner.FedMLRunner`."""


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    raise missing("fedml.simulation", name, __all__)
