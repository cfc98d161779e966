"""Reading, overriding and validating experiment configs.

``load_config(path, overrides)`` reads a FedML-style YAML file, applies ``--set section.key=value``
overrides, and returns a validated :class:`~shieldwall.config.schema.ExperimentConfig`. Every
problem is a :class:`ConfigError` whose message names the key, the value received, the allowed
values and, for unknown keys, the closest known key.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from shieldwall.config.errors import ConfigError
from shieldwall.config.fedml_keys import (
    FEDML_SECTIONS,
    behaviour_warnings,
    fedml_markers,
    is_fedml_key,
    refused_features,
)
from shieldwall.config.ranges import check_ranges, positive
from shieldwall.config.schema import (
    IGNORED_KEYS,
    OPEN_SECTIONS,
    SECTIONS,
    ExperimentConfig,
)
from shieldwall.registry import closest, normalize_name

__all__ = [
    "ConfigError", "load_config", "config_from_dict", "parse_override", "config_to_dict",
    "read_yaml", "read_sections", "yaml_problem", "yaml_value", "coerce_value", "int_keys",
]

log = logging.getLogger(__name__)


def yaml_value(raw: str) -> Any:
    """A value typed on the command line, parsed as YAML (``3`` → 3, ``[1, 2]`` → a list,
    empty → ``None``); text that is not valid YAML stays the text, for the key's own check to
    name."""
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value`` into its parts; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    path, raw = text.split("=", 1)
    if "." not in path:
        raise ConfigError(f"--set expects section.key=value, got {text!r} (no section)")
    section, key = path.strip().split(".", 1)
    return section, key, yaml_value(raw)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: ``line L, column C: problem``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


#: the most bytes :func:`read_yaml` reads (a config of FedML's size is a few KiB)
MAX_YAML_BYTES = 16 << 20


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The parsed YAML in ``path``; :class:`ConfigError` (one line naming ``what`` and the file)
    if it is missing, a folder, unreadable, over :data:`MAX_YAML_BYTES`, not UTF-8 text or
    not valid YAML."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder; give a YAML file")
    if not path.exists():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:  # a pipe (``--cf <(...)``, /dev/stdin) is read too, up to the same cap as a file
        with path.open("rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {str(path)!r} is larger than {MAX_YAML_BYTES >> 20} MiB; "
                          "a config or spec is a small YAML file")
    try:
        return yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start}); save it as UTF-8 YAML"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {yaml_problem(exc)}") from None


def read_sections(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The YAML mapping of sections in ``path``; :class:`ConfigError` (one line naming the file)
    if it is missing, not YAML, or not a mapping."""
    raw = read_yaml(path, what) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{what} {str(path)!r} must hold a mapping of sections")
    return dict(raw)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read ``path`` (YAML) and apply ``overrides`` (``section.key=value`` strings)."""
    raw = read_sections(path)
    return config_from_dict(raw, overrides=overrides, name=Path(path).stem)


def config_from_dict(
    raw: Mapping[str, Any], overrides: Iterable[str] = (), name: str = "experiment"
) -> ExperimentConfig:
    """Build a validated config from a parsed mapping plus ``--set`` overrides."""
    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    ignored: list[str] = []
    given: dict[str, dict[str, Any]] = {}
    entries: list[tuple[str, str, Any, str]] = []
    for section, body in raw.items():
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise ConfigError(f"section {str(section)!r} must be a mapping, got {body!r}")
        if str(section) not in FEDML_SECTIONS:
            _known_section(str(section))
        entries += [(str(section), str(key), value, "file") for key, value in body.items()]
    entries += [(*parse_override(text), "--set") for text in overrides]
    for section, key, value, origin in entries:
        given.setdefault(section, {})[key] = value
        if section not in SECTIONS and section in FEDML_SECTIONS:
            ignored.append(f"{section}.{key}")  # FedML-only section (dp_args, fhe_args, …)
            continue
        section_name = _known_section(section)
        if key in IGNORED_KEYS.get(section_name, ()) or _unused_fedml_key(section_name, key):
            ignored.append(f"{section_name}.{key}")
            continue
        values.setdefault(section_name, {})[key] = value
        sources[f"{section_name}.{key}"] = origin
    refused = refused_features(given)
    if refused:
        raise ConfigError(refused)
    if ignored:
        log.info("ignoring FedML keys not used by shieldwall (accepted, no effect here): %s",
                 ", ".join(dict.fromkeys(ignored)))
    for warning in behaviour_warnings(given):
        log.warning("%s", warning)

    sections = {name_: _build_section(name_, values.get(name_, {})) for name_ in SECTIONS}
    common = sections["common_args"]
    if normalize_name(common.fedml_semantics) == "auto":  # resolved once: resumes keep it
        markers = fedml_markers(given, ignored)
        common.fedml_semantics = "on" if markers else "off"
        sources["common_args.fedml_semantics"] = (
            f"auto: FedML's {markers[0]}" if markers else "auto: no FedML-only key")
    sources.update({key: "unused" for key in ignored})
    cfg = ExperimentConfig(**sections, sources=sources, name=name)
    _check_consistency(cfg)
    return cfg


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain data (what a run directory records)."""
    out: dict[str, Any] = {}
    for section in SECTIONS:
        body = dataclasses.asdict(getattr(cfg, section))
        params = body.pop("params", None)
        if params:
            body.update(params)
        out[section] = body
    return out


_OPEN_SECTION_UNUSED = frozenset({"add_attack", "add_defense", "federated_optimizer"})


def _unused_fedml_key(section: str, key: str) -> bool:
    """A key FedML knows that shieldwall's ``section`` has no field for (named, not used)."""
    if section in OPEN_SECTIONS:  # unknown keys there are attack/defense parameters
        return key in _OPEN_SECTION_UNUSED
    fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
    return key not in fields and is_fedml_key(section, key)


def _known_section(section: str) -> str:
    if section in SECTIONS:
        return section
    hint = closest(section, list(SECTIONS))
    raise ConfigError(
        f"unknown config section {section!r}"
        + (f" (did you mean {hint!r}?)" if hint else "")
        + f"; valid sections: {', '.join(SECTIONS)}"
    )


def _build_section(section: str, body: Mapping[str, Any]) -> Any:
    cls = SECTIONS[section]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "params"}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key, value in body.items():
        if key in fields:
            kwargs[key] = coerce_value(section, key, value, hints[key], fields[key])
        elif section in OPEN_SECTIONS:
            params[key] = value
        else:
            known = [*fields, *IGNORED_KEYS.get(section, ())]
            hint = closest(key, known)
            raise ConfigError(
                f"unknown key {section}.{key}"
                + (f" (did you mean {section}.{hint}?)" if hint else "")
                + f"; known keys of {section}: {', '.join(sorted(fields))}"
            )
    if section in OPEN_SECTIONS:
        kwargs["params"] = params
    return cls(**kwargs)


def coerce_value(section: str, key: str, value: Any, hint: Any, fld: dataclasses.Field) -> Any:
    """Check ``value`` against the field's type and choices; parse the few string forms."""
    where = f"{section}.{key}"
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional or hint is Any:
            return None
        if hint is str:
            return None if key in ("defense_type", "attack_type") else "None"
        raise ConfigError(f"{where} must not be empty")
    if optional:
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)

    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not _is_int(value):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return _in_int64(where, int(value))
    if hint is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if math.isnan(number) or (math.isinf(number) and where not in _INFINITE_OK):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return number
    if hint is str:
        choices = fld.metadata.get("choices")
        if isinstance(value, bool) and choices:  # YAML 1.1 reads on/off/yes/no as booleans
            spelled = [c for c in choices if c.lower() in (_TRUE if value else _FALSE)]
            value = spelled[0] if spelled else value
        text = str(value)
        if choices:
            canon = {normalize_name(c): c for c in choices}
            if normalize_name(text) not in canon:
                hint_ = closest(text, list(choices))
                raise ConfigError(
                    f"{where} has invalid value {value!r}"
                    + (f" (did you mean {hint_!r}?)" if hint_ else "")
                    + f"; allowed values: {', '.join(dict.fromkeys(choices))}"
                )
        return text
    if origin is list:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"{where} must be a list, got {value!r}") from None
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if args and args[0] is int:
            if not all(_is_int(v) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"{where} must be a list of integers, got {value!r}")
            return [_in_int64(where, int(v)) for v in value]
        return list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        if args and args[0] is int:
            return int_keys(where, value)
        return dict(value)
    return value


# Spellings of booleans: YAML 1.1's (which PyYAML reads as bool already) and 0/1.
_TRUE = frozenset({"true", "yes", "on", "y", "1"})
_FALSE = frozenset({"false", "no", "off", "n", "0"})
# Float keys where infinity means "no limit".
_INFINITE_OK = frozenset({"comm_args.max_update_norm"})


def _is_int(value: Any) -> bool:
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, str):
        try:
            int(value)
        except ValueError:
            return False
        return True
    return False


def int_keys(where: str, mapping: Mapping[Any, Any]) -> dict[int, Any]:
    """``mapping`` with its keys as integers (client ids); a key that is not one is an error."""
    bad = [k for k in mapping if isinstance(k, bool) or not _is_int(k)]
    if bad:
        raise ConfigError(f"{where} maps client ids (integers) to values; {bad[0]!r} is not one")
    return {int(k): v for k, v in mapping.items()}


_INT64 = (-(2**63), 2**63 - 1)


def _in_int64(where: str, number: int) -> int:
    """``number`` if a 64-bit integer holds it (torch and NumPy take no larger), else an error."""
    if not _INT64[0] <= number <= _INT64[1]:
        raise ConfigError(f"{where} must be an integer between -2**63 and 2**63 - 1, got {number}")
    return number


def _check_consistency(cfg: ExperimentConfig) -> None:
    """Checks across fields of the whole config (registry names are checked at build time)."""
    t = cfg.train_args
    positive("train_args.client_num_in_total", t.client_num_in_total)
    positive("train_args.client_num_per_round", t.client_num_per_round)
    positive("train_args.comm_round", t.comm_round)
    positive("train_args.epochs", t.epochs)
    positive("train_args.batch_size", t.batch_size)
    positive("train_args.learning_rate", t.learning_rate)
    positive("train_args.weight_decay", t.weight_decay, allow_zero=True)
    positive("train_args.momentum", t.momentum, allow_zero=True)
    positive("train_args.server_lr", t.server_lr)
    positive("train_args.fedprox_mu", t.fedprox_mu, allow_zero=True)
    positive("train_args.warmup_steps", t.warmup_steps, allow_zero=True)
    positive("train_args.max_grad_norm", t.max_grad_norm)
    positive("train_args.target_batch_size", t.target_batch_size)
    positive("train_args.lamb_clamp_value", t.lamb_clamp_value)
    _check_seed_and_device(cfg)
    c = cfg.comm_args
    for key in ("round_timeout", "max_message_mb", "max_update_norm"):
        positive(f"comm_args.{key}", getattr(c, key))
    for key in ("quorum_timeout", "join_timeout", "reconnect_timeout"):
        positive(f"comm_args.{key}", getattr(c, key), allow_zero=True)
    _port("comm_args.server_port", c.server_port)
    _port("client_silo_args.pg_master_port", cfg.client_silo_args.pg_master_port)
    if not 0.0 <= t.worker_momentum < 1.0:
        raise ConfigError(
            f"train_args.worker_momentum must be in [0, 1), got {t.worker_momentum}"
        )
    optimizer = str(t.federated_optimizer).lower().replace("_", "-")
    if t.worker_momentum and optimizer not in ("ps-sgd", "pssgd", "sgd", "sync-sgd"):
        raise ConfigError(
            "train_args.worker_momentum is read by PS-SGD only; "
            f"got federated_optimizer {t.federated_optimizer!r}"
        )
    if isinstance(t.shared_dropout_rounds, bool) or not isinstance(
        t.shared_dropout_rounds, int
    ) or t.shared_dropout_rounds < 0:
        raise ConfigError(
            "train_args.shared_dropout_rounds must be an integer >= 0 (0: each client its own "
            f"dropout masks), got {t.shared_dropout_rounds!r}"
        )
    positive("train_args.checkpoint_frequency", t.checkpoint_frequency, allow_zero=True)
    positive("validation_args.frequency_of_the_test", cfg.validation_args.frequency_of_the_test)
    positive("data_args.partition_alpha", cfg.data_args.partition_alpha)
    positive("data_args.partition_min_size", cfg.data_args.partition_min_size, allow_zero=True)
    if t.client_num_per_round is not None and t.client_num_per_round > t.client_num_in_total:
        raise ConfigError(
            f"train_args.client_num_per_round ({t.client_num_per_round}) exceeds "
            f"train_args.client_num_in_total ({t.client_num_in_total})"
        )
    a = cfg.attack_args
    positive("attack_args.byzantine_client_num", a.byzantine_client_num, allow_zero=True)
    positive("attack_args.attack_start", a.attack_start, allow_zero=True)
    if a.byzantine_client_num > t.client_num_in_total:
        raise ConfigError(
            f"attack_args.byzantine_client_num ({a.byzantine_client_num}) exceeds "
            f"train_args.client_num_in_total ({t.client_num_in_total})"
        )
    d = cfg.defense_args
    positive("defense_args.byzantine_client_num", d.byzantine_client_num, allow_zero=True)
    check_ranges(cfg)


_SEEDS = 2**32  # NumPy's and the attack schedules' seeds are unsigned 32-bit


def _check_seed_and_device(cfg: ExperimentConfig) -> None:
    """The seed's range and the thread and chunk counts (0 threads: torch's default)."""
    seed = cfg.common_args.random_seed
    if not 0 <= seed < _SEEDS:
        raise ConfigError(f"common_args.random_seed must be in 0..{_SEEDS - 1}, got {seed}")
    positive("device_args.num_threads", cfg.device_args.num_threads, allow_zero=True)
    positive("device_args.max_clients_per_chunk", cfg.device_args.max_clients_per_chunk)


def _port(where: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where} must be a TCP port in 0..65535, got {port}")
