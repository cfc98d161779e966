"""A drop-in for FedML's training, attack and defense API: ``import shieldwall.fedml as fedml``.

FedML's example scripts run unchanged but for that import line::

    args = fedml.init()                                   # --cf CONFIG --rank N …
    device = fedml.device.get_device(args)
    dataset, output_dim = fedml.data.load(args)           # FedML's 8-item list of DataLoaders
    model = fedml.model.create(args, output_dim)          # or any torch.nn.Module
    FedMLRunner(args, device, dataset, model).run()       # simulation / mpirun / cross-silo

and FedML's one-line entry points (``run_simulation``, ``run_cross_silo_server``/``_client``,
``run_hierarchical_cross_silo_server``/``_client``) and ``fedml.cross_silo(.hierarchical)``'s
``Client``/``Server``. ``args`` carries FedML's flat names backed by shieldwall's validated config
(:mod:`.arguments`); training is shieldwall's (its algorithms, attacks and defenses, under FedML's
semantics for FedML configs). A FedML name this module does not provide is one error naming the
nearest one it does. See ``docs/fedml_compat.md``.
"""

from __future__ import annotations

import logging
import random
import sys
from typing import Any

import numpy as np
import torch

from shieldwall.fedml import data, device, model
from shieldwall.fedml._api import install_excepthook, missing
from shieldwall.fedml.arguments import Arguments, load_args
from shieldwall.fedml.runner import FedMLRunner, with_training_type

__all__ = [
    "init", "device", "data", "model", "logger", "FedMLRunner", "Arguments",
    "run_simulation", "run_cross_silo_server", "run_cross_silo_client",
    "run_hierarchical_cross_silo_server", "run_hierarchical_cross_silo_client",
    "cross_silo", "simulation", "core",
    "FEDML_TRAINING_PLATFORM_SIMULATION", "FEDML_TRAINING_PLATFORM_CROSS_SILO",
    "FEDML_TRAINING_PLATFORM_CROSS_DEVICE", "FEDML_SIMULATION_TYPE_SP",
    "FEDML_SIMULATION_TYPE_MPI", "FEDML_CROSS_SILO_SCENARIO_HIERARCHICAL", "__version__",
]

__version__ = "0.8.30"  # the FedML version whose API this mirrors
FEDML_TRAINING_PLATFORM_SIMULATION = "simulation"
FEDML_TRAINING_PLATFORM_CROSS_SILO = "cross_silo"
FEDML_TRAINING_PLATFORM_CROSS_DEVICE = "cross_device"
FEDML_SIMULATION_TYPE_SP = "sp"
FEDML_SIMULATION_TYPE_MPI = "MPI"
FEDML_CROSS_SILO_SCENARIO_HIERARCHICAL = "hierarchical"

logger = logging.getLogger("fedml")
"""FedML's ``fedml.logger``."""

install_excepthook()


def init(args: Arguments | None = None, check_env: bool = True,
         should_init_logs: bool = True) -> Arguments:
    """FedML's ``fedml.init()``: parse ``sys.argv`` (``--cf``, ``--rank``, ``--role``,
    ``--run_id``, …), load and validate the config, seed ``random``/NumPy/torch with
    ``random_seed`` as FedML does, and return FedML's flat ``args``."""
    del check_env
    if should_init_logs and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args is None:
        args = load_args(sys.argv[1:])
    seed = int(getattr(args, "random_seed", 0) or 0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    threads = getattr(args, "num_threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    return args


def _entry(kind: str, loader: Any, runner: Any) -> Any:
    args = with_training_type(init(), kind)
    dev = device.get_device(args)
    dataset, output_dim = loader(args)
    net = model.create(args, output_dim)
    return runner(args, dev, dataset, net)


def run_simulation(backend: str = FEDML_SIMULATION_TYPE_SP) -> Any:
    """FedML's one-line simulation (``sp`` in one process; under mpirun, one rank each)."""
    del backend
    return _entry("simulation", data.load, lambda *a: FedMLRunner(*a).run())


def run_cross_silo_server() -> Any:
    """FedML's one-line cross-silo server (``--rank 0``)."""
    from shieldwall.fedml.cross_silo import Server

    return _entry("cross_silo", data.load, lambda *a: Server(*a).run())


def run_cross_silo_client() -> Any:
    """FedML's one-line cross-silo client (``--rank K``)."""
    from shieldwall.fedml.cross_silo import Client

    return _entry("cross_silo", data.load, lambda *a: Client(*a).run())


def run_hierarchical_cross_silo_server() -> Any:
    """FedML's one-line hierarchical server (``--rank 0``)."""
    from shieldwall.fedml.cross_silo.hierarchical import Server

    return _entry("cross_silo", data.load, lambda *a: Server(*a).run())


def run_hierarchical_cross_silo_client() -> Any:
    """FedML's one-line hierarchical silo (``--rank K``; its DDP trainers run this script too)."""
    from shieldwall.fedml.cross_silo.hierarchical import Client

    return _entry("cross_silo", data.load_cross_silo, lambda *a: Client(*a).run())


def __getattr__(name: str) -> Any:
    if name in ("cross_silo", "simulation", "core"):
        import importlib

        return importlib.import_module(f"shieldwall.fedml.{name}")
    if name.startswith("_"):
        raise AttributeError(name)
    raise missing("fedml", name, [n for n in __all__ if not n.startswith("_")])
