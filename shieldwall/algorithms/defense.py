"""The server's aggregation step: pre-aggregators then an aggregator, built from ``defense_args``.

Without a defense (``enable_defense: false``) the step is FedAvg's mean weighted by sample
counts. With one, rows rejected at the wire were already removed by the server, and the rule runs
with ``f`` Byzantine rows to tolerate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS, AggregateResult, aggregate
from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import ExperimentConfig
from shieldwall.preaggregators import PREAGGREGATORS, preaggregate_chain
from shieldwall.registry import Entry, UnknownNameError, closest

__all__ = ["Defense", "build_defense", "check_params", "defense_f"]


def check_params(entry: Entry, params: dict[str, Any], section: str) -> None:
    """Raise :class:`ConfigError` for a key that ``entry`` does not take (naming the closest)."""
    accepted = entry.param_names()
    for key in params:
        if key not in accepted:
            hint = closest(key, accepted) if accepted else None
            raise ConfigError(
                f"unknown key {section}.{key} for {entry.name!r}"
                + (f" (did you mean {section}.{hint}?)" if hint else "")
                + f"; {entry.name!r} takes: {', '.join(accepted) or 'no parameters'}"
            )


@dataclass
class Defense:
    """One configured aggregation step.

    Attributes:
        aggregator: canonical aggregator name.
        params: its keyword parameters.
        preaggregators: ``(name, params)`` steps applied first, in order.
        weighted: pass sample counts as ``weights`` (the undefended FedAvg mean).
    """

    aggregator: str
    params: dict[str, Any] = field(default_factory=dict)
    preaggregators: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    weighted: bool = False

    @property
    def label(self) -> str:
        return "+".join([*(n for n, _ in self.preaggregators), self.aggregator])

    def __call__(self, updates: Tensor, f: int, weights: Tensor | None = None) -> AggregateResult:
        """Aggregate; ``selected`` indexes ``updates`` rows only without pre-aggregation."""
        rows, f_left = updates, f
        if self.preaggregators:
            rows, f_left = preaggregate_chain(updates, f, self.preaggregators)
        params = dict(self.params)
        if self.weighted and weights is not None and not self.preaggregators:
            params["weights"] = weights
        result = aggregate(self.aggregator, rows, f_left, **params)
        if self.preaggregators:
            return AggregateResult(result.vector)
        return result

    def as_function(self):
        """``fn(updates, f) -> Tensor`` (what adaptive attacks optimise against)."""
        return lambda updates, f: self(updates, f).vector

    def check_tolerates(self, n: int, f: int) -> None:
        """Raise :class:`ConfigError` when the rule cannot run with ``n`` rows and ``f``."""
        try:
            self(torch.zeros((n, 2)), f)
        except ValueError as exc:
            raise ConfigError(
                f"defense {self.label!r} cannot run with {n} clients per round and f={f}: {exc}. "
                "Lower attack_args.byzantine_client_num (or defense_args.byzantine_client_num), "
                "add clients, or choose another defense_args.defense_type"
            ) from None


def _parse_steps(raw: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    steps: list[tuple[str, dict[str, Any]]] = []
    for item in raw:
        if isinstance(item, str):
            steps.append((item, {}))
        elif isinstance(item, dict) and len(item) == 1:
            (name, params), = item.items()
            steps.append((str(name), dict(params or {})))
        else:
            raise ConfigError(
                f"defense_args.preaggregators entries must be a name or {{name: {{params}}}}, "
                f"got {item!r}"
            )
    return steps


def build_defense(cfg: ExperimentConfig) -> Defense:
    """The defense ``cfg.defense_args`` describes (the weighted mean when disabled)."""
    d = cfg.defense_args
    if not d.enable_defense or d.defense_type in (None, "None", "none"):
        return Defense("mean", weighted=True)
    try:
        entry = AGGREGATORS.entry(d.defense_type)
        steps = []
        for name, params in _parse_steps(d.preaggregators):
            pre = PREAGGREGATORS.entry(name)
            check_params(pre, params, f"defense_args.preaggregators.{pre.name}")
            steps.append((pre.name, params))
    except UnknownNameError as exc:
        raise ConfigError(f"defense_args.defense_type: {exc}") from None
    check_params(entry, d.params, "defense_args")
    return Defense(entry.name, dict(d.params), steps, weighted=entry.name == "mean")


def defense_f(cfg: ExperimentConfig) -> int:
    """The number of Byzantine rows the defense tolerates."""
    if cfg.defense_args.byzantine_client_num is not None:
        return cfg.defense_args.byzantine_client_num
    return cfg.attack_args.byzantine_client_num
