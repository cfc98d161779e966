"""``fedml.init()``'s arguments: FedML's launch flags and its flat ``args`` object.

FedML's ``load_arguments`` parses ``--cf``/``--yaml_config_file``, ``--run_id``, ``--rank``,
``--local_rank``, ``--node_rank``, ``--role``, ``--run_device_id`` and ``--using_mlops`` (unknown
flags are ignored), then copies every key of every YAML section onto one object. :func:`load_args`
does the same, but the YAML is first loaded and validated as shieldwall's config
(:func:`shieldwall.config.load_config`: unknown keys answered with "did you mean", FedML-only keys
named as unused); the object's attributes are the validated values under FedML's flat names, plus
every FedML-only key as written, plus what FedML's ``init()`` derives (``n_proc_in_silo``,
``proc_rank_in_silo``, ``rank_in_node``, ``process_id``, ``worker_num``, ``role`` under mpirun).

User code may change attributes (FedML's custom-data example sets ``args.client_num_in_total``);
:meth:`Arguments.config` rebuilds and re-validates the config from them when training starts.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shieldwall.config.loader import ConfigError, config_from_dict, read_sections
from shieldwall.config.schema import SECTIONS, ExperimentConfig

__all__ = ["Arguments", "load_args", "parse_flags"]

log = logging.getLogger("shieldwall.fedml")

#: FedML's launch flags (``fedml/arguments.py``, ``add_args``) and their defaults.
FLAGS: dict[str, Any] = {
    "run_id": "0", "rank": 0, "local_rank": 0, "node_rank": 0, "role": "client",
    "run_device_id": "0", "using_mlops": False,
}

_INTERNAL = frozenset({"_raw", "_cfg", "_snapshot", "_where", "_flags", "_shieldwall_input_shape"})


def parse_flags(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """FedML's flags from ``argv``; the rest are returned (and named as unused by the caller)."""
    p = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    p.add_argument("--yaml_config_file", "--cf", default="")
    p.add_argument("--run_id", type=str, default="0")
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--local_rank", type=int, default=0)
    p.add_argument("--node_rank", type=int, default=0)
    p.add_argument("--role", type=str, default="client")
    p.add_argument("--run_device_id", type=str, default="0")
    p.add_argument("--using_mlops", type=str, default="False")
    try:
        ns, rest = p.parse_known_args(list(argv))
    except argparse.ArgumentError as exc:  # not argparse's usage block: one line
        raise ConfigError(f"fedml.init(): {exc} (in: {' '.join(argv)})") from None
    except SystemExit:
        raise ConfigError("fedml.init(): bad launch flags " + " ".join(argv)) from None
    return ns, rest


class Arguments:
    """FedML's flat ``args``, backed by a validated :class:`ExperimentConfig` (module docstring)."""

    def __init__(self, raw: dict[str, dict[str, Any]], cfg: ExperimentConfig,
                 flags: dict[str, Any]) -> None:
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "_flags", flags)
        where: dict[str, list[str]] = {}
        values: dict[str, Any] = {k: v for k, v in flags.items() if not k.startswith("_")}
        for section in SECTIONS:  # every schema field under its flat name (defaults included)
            body = getattr(cfg, section)
            for key, value in vars(body).items():
                if key == "params":
                    continue
                values.setdefault(key, value)
                where.setdefault(key, []).append(section)
        for section, body in raw.items():  # what the file says wins, as in FedML
            for key, value in (body or {}).items():
                schema = getattr(getattr(cfg, section, None), key, _NONE)
                params = getattr(getattr(cfg, section, None), "params", {})
                values[key] = (schema if schema is not _NONE else params.get(key, value))
                if section not in where.get(key, []):
                    where.setdefault(key, []).insert(0, section)
        for key, value in values.items():
            object.__setattr__(self, key, copy.deepcopy(value))
        object.__setattr__(self, "_where", where)
        object.__setattr__(self, "_snapshot", copy.deepcopy(values))

    def __repr__(self) -> str:
        shown = {k: v for k, v in vars(self).items() if k not in _INTERNAL}
        return f"Arguments({shown})"

    def changed(self) -> dict[str, Any]:
        """Attributes whose value differs from what :func:`load_args` set."""
        snap = self._snapshot
        return {k: v for k, v in vars(self).items()
                if k not in _INTERNAL and (k not in snap or snap[k] != v)}

    def config(self) -> ExperimentConfig:
        """The validated config, with every attribute the user changed applied to its section."""
        changed = {k: v for k, v in self.changed().items() if k in self._where}
        if not changed:
            return self._cfg
        raw = copy.deepcopy(self._raw)
        for key, value in changed.items():
            sections = [s for s in self._where[key] if s in raw and key in raw[s]] or \
                self._where[key][:1]
            for section in sections:
                raw.setdefault(section, {})[key] = value
            log.info("args.%s = %r (set by the script)", key, value)
        cfg = config_from_dict(raw, self._cfg_overrides(), name=self._cfg.name)
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "_snapshot", copy.deepcopy(
            {k: v for k, v in vars(self).items() if k not in _INTERNAL}))
        return cfg

    def _cfg_overrides(self) -> list[str]:
        return list(self._flags.get("_overrides", ()))


_NONE = object()


def load_args(argv: Sequence[str], overrides: Sequence[str] = ()) -> Arguments:
    """Parse FedML's flags from ``argv``, load and validate ``--cf``, derive FedML's extras."""
    ns, rest = parse_flags(argv)
    if rest:
        log.info("fedml.init(): command-line arguments not used by shieldwall: %s",
                 " ".join(rest))
    path = ns.yaml_config_file
    if not path:
        raise ConfigError("fedml.init() needs a config: pass --cf CONFIG (FedML's "
                          "--yaml_config_file), e.g. python torch_mpi.py --cf fedml_config.yaml")
    raw = read_sections(path, "config file (--cf)")
    raw = {str(k): dict(v or {}) if isinstance(v, dict) or v is None else v
           for k, v in raw.items()}
    env_overrides = [s for s in os.environ.get("SHIELDWALL_FEDML_SET", "").split(";") if s]
    all_overrides = [*env_overrides, *overrides]
    if ns.node_rank:  # FedML's hierarchical launch flag: this machine's rank in its silo
        all_overrides.append(f"client_silo_args.node_rank_in_silo={ns.node_rank}")
    unused = [f"--{k} {getattr(ns, k)}" for k in ("run_id", "run_device_id", "local_rank")
              if getattr(ns, k) != FLAGS[k]]
    if unused:
        log.info("fedml.init(): FedML launch flags accepted, not used by shieldwall: %s "
                 "(the rank within a silo comes from torchrun's LOCAL_RANK/RANK)",
                 ", ".join(unused))
    cfg = config_from_dict(raw, all_overrides, name=Path(path).stem)
    flags = {k: getattr(ns, k) for k in FLAGS}
    flags["using_mlops"] = str(ns.using_mlops).lower() in ("1", "true", "yes")
    flags["yaml_config_file"] = path
    flags["_overrides"] = all_overrides
    args = Arguments(raw, cfg, flags)
    _derive(args, cfg)
    object.__setattr__(args, "_snapshot", copy.deepcopy(
        {k: v for k, v in vars(args).items() if k not in _INTERNAL}))
    return args


def _derive(args: Arguments, cfg: ExperimentConfig) -> None:
    """What FedML's ``init()`` adds to ``args`` (``_init_cross_silo_*``, ``_manage_mpi_args``)."""
    env = os.environ
    args.rank = int(args.rank)
    if cfg.data_args.data_cache_dir:
        args.data_cache_dir = os.path.expanduser(cfg.data_args.data_cache_dir)
    if "worker_num" not in args._where or args.worker_num is None:
        args.worker_num = cfg.train_args.client_num_per_round or cfg.train_args.client_num_in_total
    if "OMPI_COMM_WORLD_RANK" in env:  # FedML's MPI mode: the rank and role come from MPI
        args.rank = int(env["OMPI_COMM_WORLD_RANK"])
        args.role = "server" if args.rank == 0 else "client"
    kind = str(cfg.common_args.training_type).lower()
    ids = cfg.train_args.client_id_list
    if kind == "cross_silo" and args.rank > 0 and ids and "OMPI_COMM_WORLD_RANK" not in env \
            and args.rank not in ids:
        raise ConfigError(f"--rank {args.rank} is not a client of train_args.client_id_list "
                          f"{ids} (the server is --rank 0)")
    s = cfg.client_silo_args
    # silos with several trainers whenever client_silo_args asks for them (the seed config of
    # FedML's hierarchical example has no scenario: hierarchical; see docs/fedml_compat.md)
    hierarchical = str(cfg.common_args.scenario).lower() == "hierarchical" or (
        kind == "cross_silo" and s.n_node_in_silo * s.n_proc_per_node > 1)
    if args.rank == 0 or not hierarchical:
        args.n_node_in_silo, args.n_proc_in_silo = (1, 1) if args.rank == 0 else (
            s.n_node_in_silo, 1)
        args.rank_in_node = args.proc_rank_in_silo = 0
    elif "WORLD_SIZE" in env:  # a silo trainer started by torchrun (or by Client.run)
        args.n_proc_in_silo = int(env["WORLD_SIZE"])
        args.rank_in_node = int(env.get("LOCAL_RANK", 0))
        args.proc_rank_in_silo = int(env.get("RANK", 0))
        args.pg_master_address = env.get("MASTER_ADDR", s.pg_master_address)
        args.pg_master_port = int(env.get("MASTER_PORT", s.pg_master_port))
    else:  # Client.run() will start the silo's other trainers
        args.n_proc_in_silo = max(s.n_node_in_silo, 1) * max(s.n_proc_per_node, 1)
        args.rank_in_node = 0
        args.proc_rank_in_silo = s.node_rank_in_silo * max(s.n_proc_per_node, 1)
    args.process_id = args.rank_in_node if hierarchical and args.rank else args.rank
    args.comm = None
