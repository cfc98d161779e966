"""Parameters of registered rules and attacks as a config sets them: which keys, which values.

Aggregators, pre-/post-aggregators and attacks are plain functions; a config sets their keyword
parameters (``defense_args``/``attack_args`` keys, ``name(k=v)`` spellings, pre-aggregator
``{name: {params}}`` entries). :func:`user_params` lists the parameters a config may set,
:func:`check_params` refuses any other key, naming the closest one, and
:func:`convert_params` checks every value against the annotation of its parameter in the
function's signature. Both the defense and the adversary builders use this module, so neither
imports the other for it.

Values are converted as YAML users write them: a numeric string where a number is expected
(YAML 1.1 reads ``1e11`` as a string) becomes the number, an integral float an ``int``, YAML's
and the usual on/off spellings a ``bool``, a list a tuple. NaN is never a parameter, and
infinity only where the default is infinite. Anything else is one :class:`ConfigError` line
naming the rule, the parameter, the value and what is allowed.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from typing import Any

from shieldwall.config.loader import ConfigError
from shieldwall.postaggregators import SUPPLIED
from shieldwall.registry import Entry, closest

__all__ = ["check_params", "convert_params", "convert_value", "user_params"]

# Keyword arguments the pipeline supplies itself: never config keys.
_SUPPLIED = frozenset({"f", "weights", "generator", *SUPPLIED})


def user_params(entry: Entry) -> list[str]:
    """The keyword parameters of ``entry`` a config may set."""
    internal = set(entry.meta.get("internal", ()))
    return [p for p in entry.param_names() if p not in _SUPPLIED and p not in internal]


def check_params(entry: Entry, params: dict[str, Any], section: str) -> None:
    """Raise :class:`ConfigError` for a key that ``entry`` does not take (naming the closest)."""
    accepted = user_params(entry)
    for key in params:
        if key not in accepted:
            hint = closest(key, accepted) if accepted else None
            raise ConfigError(
                f"unknown key {section}.{key} for {entry.name!r}"
                + (f" (did you mean {section}.{hint}?)" if hint else "")
                + f"; {entry.name!r} takes: {', '.join(accepted) or 'no parameters'}"
            )


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class _Refused(ValueError):
    """The value does not fit the annotation (its message says what is allowed)."""


def _as_number(value: Any) -> float:
    if isinstance(value, bool):
        raise _Refused("a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _Refused("a number") from None
    raise _Refused("a number")


def _convert(value: Any, hint: Any, default: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        allowed = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, default)
            except _Refused as exc:
                allowed.append(str(exc))
        if type(None) in args:
            allowed.append("null")
        raise _Refused(" or ".join(allowed))
    if hint is Any or hint is inspect.Parameter.empty:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise _Refused("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            number = _as_number(value)
        except _Refused:
            raise _Refused("an integer") from None
        if not number.is_integer():
            raise _Refused("an integer")
        return int(number)
    if hint is float:
        number = _as_number(value)
        if math.isnan(number) or (math.isinf(number) and not (
                isinstance(default, (int, float)) and math.isinf(default))):
            raise _Refused("a finite number")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Refused("a string")
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _Refused("a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Refused(f"a list of {len(args)} values")
            return tuple(_convert(v, a, None) for v, a in zip(value, args))
        item = args[0] if args else Any
        out = [_convert(v, item, None) for v in value]
        return tuple(out) if origin is tuple else out
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Refused(f"a {hint.__name__} (not settable from a config)")
    return value


def convert_value(entry: Entry, name: str, value: Any) -> Any:
    """``value`` converted to what parameter ``name`` of ``entry`` takes; :class:`ValueError`
    (a message without the config key) when it does not fit."""
    try:
        parameter = inspect.signature(entry.obj).parameters[name]
        hint = typing.get_type_hints(entry.obj).get(name, parameter.annotation)
    except (KeyError, NameError, TypeError, ValueError):
        return value
    default = parameter.default
    try:
        return _convert(value, hint, None if default is inspect.Parameter.empty else default)
    except _Refused as exc:
        raise ValueError(f"{name}={value!r} is not {exc}") from None


def convert_params(entry: Entry, params: dict[str, Any], section: str) -> dict[str, Any]:
    """``params`` with every plain value checked and converted (see the module docstring);
    values computed later (callables) pass through. Raises :class:`ConfigError`."""
    out = {}
    for key, value in params.items():
        if callable(value) and not isinstance(value, type):
            out[key] = value
            continue
        try:
            out[key] = convert_value(entry, key, value)
        except ValueError as exc:
            where = f"{section}.{key}" if section else key
            raise ConfigError(
                f"{where}: {entry.name!r} parameter {exc} "
                f"(annotation: {_describe(entry, key)})"
            ) from None
    return out


def _describe(entry: Entry, name: str) -> str:
    try:
        hint = typing.get_type_hints(entry.obj).get(name)
    except (NameError, TypeError):
        hint = None
    text = str(hint) if hint is not None else "any"
    return text.replace("<class '", "").replace("'>", "").replace("NoneType", "None")
