"""What ``--resume … --set`` changes mid-run: recorded with the round it took effect, or refused.

A run's ``config.yaml`` is the config it *started* with and is never rewritten. Resuming with a
config that differs from the run's current one (``config.yaml`` plus every earlier change)
appends one entry per changed key to ``config_changes.yaml``::

    - {round: 3, key: train_args.learning_rate, old: 0.05, new: 0.01, kind: training}

``round`` is the first round run with the new value; the first metrics record of that round
carries the same entries under ``config_changes``. ``shieldwall run --resume RUN_DIR`` without a
config rebuilds the current config from both files (:func:`load_run_config`).

Keys fall in three kinds (:func:`classify`):

* ``operational`` — how and where the run executes, not what it computes: ``tracking_args``,
  ``device_args``, ``validation_args``, ``client_silo_args``, ``comm_args`` (but
  ``max_update_norm``), ``train_args.comm_round``/``checkpoint_frequency``,
  ``data_args.data_cache_dir``, ``common_args.training_type``, ``btard_args.measure_bytes``;
* ``structural`` — what makes the run the experiment it is; a change makes the checkpoint or
  its meaning invalid, so it is refused unless forced (``--force``): :data:`STRUCTURAL`;
* ``training`` — everything else (learning rate, momentum, epochs, batch size, the defense, the
  attack…): allowed and recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from shieldwall.atomic import write_text_atomic
from shieldwall.config import ConfigError, ExperimentConfig, config_from_dict, config_to_dict
from shieldwall.config.loader import read_sections, read_yaml
from shieldwall.rundir.directory import CONFIG_NAME

__all__ = ["CHANGES_NAME", "STRUCTURAL", "classify", "config_changes", "load_run_config",
           "read_changes", "record_changes", "changes_at"]

CHANGES_NAME = "config_changes.yaml"

#: Keys that fix the experiment: a mid-run change is refused unless forced.
STRUCTURAL: dict[str, str] = {
    "common_args.random_seed": "seed",
    "common_args.scenario": "scenario",
    "data_args.dataset": "data set",
    "data_args.partition_method": "partition",
    "data_args.partition_alpha": "partition",
    "data_args.partition_min_size": "partition",
    "model_args.model": "model",
    "train_args.federated_optimizer": "algorithm",
    "train_args.client_num_in_total": "number of clients",
    "train_args.client_id_list": "client ids",
    "train_args.client_optimizer": "optimizer (its state is in the checkpoint)",
    "redundancy_args.enable": "driver",
    "redundancy_args.approach": "redundant placement",
    "redundancy_args.group_size": "redundant placement",
    "redundancy_args.rama_m": "redundant placement",
}

_OPERATIONAL_SECTIONS = ("tracking_args", "device_args", "validation_args", "client_silo_args",
                         "environment_args", "comm_args")
_OPERATIONAL_KEYS = frozenset({"train_args.comm_round", "train_args.checkpoint_frequency",
                               "data_args.data_cache_dir", "common_args.training_type",
                               "btard_args.measure_bytes"})
_NOT_OPERATIONAL = frozenset({"comm_args.max_update_norm"})


def classify(key: str) -> str:
    """``structural``, ``operational`` or ``training`` (see the module docstring)."""
    if key in STRUCTURAL:
        return "structural"
    if key in _OPERATIONAL_KEYS or (
        key.split(".", 1)[0] in _OPERATIONAL_SECTIONS and key not in _NOT_OPERATIONAL
    ):
        return "operational"
    return "training"


def read_changes(run_dir: str | Path) -> list[dict[str, Any]]:
    """The entries of ``run_dir/config_changes.yaml`` in order (empty when there is none)."""
    path = Path(run_dir) / CHANGES_NAME
    if not path.is_file():
        return []
    entries = read_yaml(path, "the run's config changes") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{str(path)!r} must hold a list of changes")
    for number, entry in enumerate(entries, 1):
        if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
                and "." in entry["key"] and isinstance(entry.get("round"), int)):
            raise ConfigError(
                f"{str(path)!r} change {number} is not a {{round: R, key: section.key, old: …, "
                f"new: …}} entry, got {entry!r}; repair or remove it"
            )
    return entries


def changes_at(run_dir: str | Path, round: int) -> list[dict[str, Any]]:
    """The changes that took effect at ``round``."""
    return [c for c in read_changes(run_dir) if c.get("round") == round]


def _current(run_dir: Path) -> dict[str, dict[str, Any]] | None:
    """The run's current config as plain data: ``config.yaml`` with every change applied."""
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        return None
    raw = read_sections(path, "the run's config")
    for change in read_changes(run_dir):
        section, key = str(change["key"]).split(".", 1)
        body = raw.setdefault(section, {})
        if change.get("removed"):
            body.pop(key, None)
        else:
            body[key] = change.get("new")
    return raw


def load_run_config(run_dir: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """The config ``run_dir`` is at now (``config.yaml`` + ``config_changes.yaml``), with
    ``overrides`` (``section.key=value``) applied on top."""
    run_dir = Path(run_dir)
    raw = _current(run_dir)
    if raw is None:
        raise FileNotFoundError(f"{str(run_dir / CONFIG_NAME)!r} does not exist: is "
                                f"{str(run_dir)!r} a run directory?")
    return config_from_dict(raw, overrides=overrides, name=run_dir.name)


def _flat(sections: dict[str, Any]) -> dict[str, Any]:
    plain = yaml.safe_load(yaml.safe_dump(sections))  # tuples → lists, as the file holds them
    return {f"{s}.{k}": v for s, body in plain.items() if isinstance(body, dict)
            for k, v in body.items()}


def config_changes(
    run_dir: str | Path, cfg: ExperimentConfig, start: int, *, force: bool = False
) -> list[dict[str, Any]]:
    """What ``cfg`` changes in the run ``run_dir`` from round ``start`` on.

    Raises :class:`ConfigError` (one line, naming every key) for structural changes unless
    ``force``; forced ones are recorded with ``forced: true``.
    """
    run_dir = Path(run_dir)
    current = _current(run_dir)
    if current is None:
        return []
    old, new = _flat(current), _flat(config_to_dict(cfg))
    changes = []
    for key in [*old, *(k for k in new if k not in old)]:
        if key in old and key in new and old[key] == new[key]:
            continue
        entry: dict[str, Any] = {"round": start, "key": key, "old": old.get(key),
                                 "new": new.get(key), "kind": classify(key)}
        if key not in new:
            entry["removed"] = True
        changes.append(entry)
    structural = [c for c in changes if c["kind"] == "structural"]
    if structural and not force:
        listed = ", ".join(f"{c['key']} {c['old']!r} -> {c['new']!r}" for c in structural)
        what = sorted({STRUCTURAL[c["key"]] for c in structural})
        raise ConfigError(
            f"--resume {run_dir}: {listed} would make it a different experiment from round "
            f"{start} on (the {', '.join(what)} cannot change mid-run); start a new run, or "
            "pass --force to record the change and continue"
        )
    for c in structural:
        c["forced"] = True
    return changes


def record_changes(run_dir: str | Path, changes: list[dict[str, Any]]) -> None:
    """Append ``changes`` to ``config_changes.yaml`` (atomically); an entry for a key that
    already changed at the same round replaces that one (a resume of a resume that never
    finished a round)."""
    if not changes:
        return
    run_dir = Path(run_dir)
    entries = read_changes(run_dir)
    for change in changes:
        same = [e for e in entries if e.get("round") == change["round"]
                and e.get("key") == change["key"]]
        if same:
            change = dict(change, old=same[0].get("old"))
            entries = [e for e in entries if e not in same]
        if change.get("old") != change.get("new") or change.get("removed"):
            entries.append(change)
    path = run_dir / CHANGES_NAME
    write_text_atomic(path, yaml.safe_dump(entries, sort_keys=False))
