"""Named registries: how config strings map to functions and classes.

One :class:`Registry` per family (aggregators, pre-aggregators, attacks, models, data sets,
algorithms, runtimes). An entry is registered with a decorator beside its definition::

    @AGGREGATORS.register("krum", aliases=("Krum",))
    def krum(updates: Tensor, f: int, *, m: int = 1) -> Tensor: ...

Lookup is case-insensitive and treats ``-`` and ``_`` alike, so ``multi-krum``, ``Multi_Krum`` and
``multikrum`` need one alias at most. An unknown name raises :class:`UnknownNameError` listing the
valid names and the closest one.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "Registry",
    "Entry",
    "UnknownNameError",
    "closest",
    "normalize_name",
    "import_submodules",
]

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A config named something that is not registered."""


def normalize_name(name: str) -> str:
    """Canonical lookup key: lower case, ``-``/space → ``_``."""
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def closest(name: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The candidate most similar to ``name`` (``None`` if nothing is similar enough)."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    if matches:
        return matches[0]
    low = normalize_name(name)
    for c in candidates:  # prefix match catches abbreviations such as 'multi' → 'multikrum'
        if normalize_name(c).startswith(low) or low.startswith(normalize_name(c)):
            return c
    return None


@dataclass
class Entry(Generic[T]):
    """One registered object and what the registry knows about it.

    Attributes:
        name: canonical name (as written at registration).
        obj: the function or class.
        aliases: other accepted spellings (FedML's, ByzShield's, papers').
        meta: free-form facts the family needs (e.g. ``{"selects": True}`` for aggregators that
            report which rows they chose, or the name of an ``*_with_info`` variant).
    """

    name: str
    obj: T
    aliases: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def param_names(self) -> list[str]:
        """Keyword parameters the entry accepts beyond the positional contract."""
        try:
            sig = inspect.signature(self.obj)
        except (TypeError, ValueError):
            return []
        names = []
        for p in sig.parameters.values():
            if p.kind in (p.KEYWORD_ONLY,) or (
                p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not inspect.Parameter.empty
            ):
                names.append(p.name)
        return names


class Registry(Generic[T]):
    """A name → object table for one family (e.g. ``"aggregator"``)."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, Entry[T]] = {}
        self._lookup: dict[str, str] = {}

    def register(
        self, name: str, *, aliases: tuple[str, ...] | list[str] = (), **meta: Any
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` and ``aliases``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, aliases=aliases, **meta)
            return obj

        return decorator

    def add(
        self, name: str, obj: T, *, aliases: tuple[str, ...] | list[str] = (), **meta: Any
    ) -> Entry[T]:
        entry = Entry(name=name, obj=obj, aliases=tuple(aliases), meta=dict(meta))
        for key in (name, *aliases):
            norm = normalize_name(key)
            owner = self._lookup.get(norm)
            if owner is not None and owner != name:
                raise ValueError(
                    f"{self.family} name {key!r} is already registered for {owner!r}"
                )
            self._lookup[norm] = name
        self._entries[name] = entry
        return entry

    def entry(self, name: str) -> Entry[T]:
        """The entry for ``name`` or an alias of it; :class:`UnknownNameError` otherwise."""
        canonical = self._lookup.get(normalize_name(name))
        if canonical is None:
            valid = self.names()
            spellings = [*valid, *[a for e in self._entries.values() for a in e.aliases]]
            hint = closest(str(name), spellings)
            msg = f"unknown {self.family} {name!r}"
            if hint is not None:
                msg += f" (did you mean {self._lookup[normalize_name(hint)]!r}?)"
            msg += f"; valid {self.family} names: {', '.join(valid)}"
            raise UnknownNameError(msg)
        return self._entries[canonical]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def canonical(self, name: str) -> str:
        return self.entry(name).name

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self._lookup

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"


def import_submodules(package_name: str) -> None:
    """Import every module of a package so that their ``@REGISTRY.register`` lines run.

    Each family package calls this at the end of its ``__init__``: adding an entry is then one new
    module (or one function in an existing one) and never an edit of a shared list.
    """
    import importlib
    import pkgutil

    package = importlib.import_module(package_name)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
