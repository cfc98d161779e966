"""Parameters of registered rules and attacks as a config sets them: which keys, which values.

Aggregators, pre-/post-aggregators and attacks are plain functions; a config sets their keyword
parameters (``defense_args``/``attack_args`` keys, ``name(k=v)`` spellings, pre-aggregator
``{name: {params}}`` entries). :func:`user_params` lists the parameters a config may set and
:func:`check_params` refuses any other key, naming the closest one. Both the defense and the
adversary builders use this module, so neither imports the other for it.
"""

from __future__ import annotations

from typing import Any

from shieldwall.config.loader import ConfigError
from shieldwall.postaggregators import SUPPLIED
from shieldwall.registry import Entry, closest

__all__ = ["check_params", "user_params"]

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
