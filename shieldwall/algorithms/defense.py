"""The server's aggregation step, built from ``defense_args``: pre-aggregation, aggregator, post.

Without a defense (``enable_defense: false``) the step is FedAvg's mean weighted by sample
counts. With one, the rows (those not rejected at the wire) pass through

1. pre-aggregation steps (``defense_args.preaggregators`` and those a FedML name implies):
   row transforms (clipping, bucketing…) or *selecting* filters (3σ, anomaly detection) that
   keep sample counts and client ids aligned with the rows they keep;
2. the aggregator, tolerating ``f`` Byzantine rows. A filter's removals do not lower ``f``:
   the rows it drops may all be honest (an attacker who shifts the statistics the filter
   reads can make them so), so the Byzantine rows may all remain. Where the stages after a
   filter cannot run with ``f`` on the rows left, ``f`` is lowered to their largest valid
   value (logged once);
3. post-aggregation steps (``defense_args.postaggregators``; CRFL, weak DP) on the aggregate.

FedML's ``defense_type`` names are translated by :func:`shieldwall.config.fedml.plan_defense`.
Stateful stages (FoolsGold's histories, anomaly detection's previous updates, CClip's previous
aggregate) keep their state in the :class:`Defense`; it advances only on committed calls (the
server's), never on the probing calls of adaptive attacks or of :meth:`Defense.check_tolerates`,
and round-trips through :meth:`Defense.state_dict` / :meth:`Defense.load_state_dict`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS, AggregateResult, aggregate
from shieldwall.algorithms.adversary import plan_attack
from shieldwall.algorithms.params import check_params, convert_params, user_params
from shieldwall.config.fedml import (
    FEDML_DEFENSES,
    FEDML_KEYS,
    DefensePlan,
    PerRound,
    Resolved,
    Step,
    plan_defense,
    setting,
)
from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import ExperimentConfig
from shieldwall.postaggregators import POSTAGGREGATORS, postaggregate_chain
from shieldwall.preaggregators import PREAGGREGATORS
from shieldwall.registry import Entry, Registry, UnknownNameError, closest
from shieldwall.seeding import torch_generator

log = logging.getLogger(__name__)

__all__ = ["Defense", "build_defense", "check_params", "defense_f", "resolve_f", "user_params"]

# Pre-aggregators that scale rows one by one (row i stays client i's row).
_ROW_WISE = frozenset({"clipping", "arc"})


@dataclass
class Defense:
    """One configured aggregation step.

    Attributes:
        aggregator: canonical aggregator name.
        params: its keyword parameters (:class:`~shieldwall.config.fedml.PerRound` values are
            computed from the number of rows reaching the aggregator).
        preaggregators: ``(name, params)`` steps applied first, in order.
        weighted: pass sample counts as ``weights`` when the aggregator takes them.
        postaggregators: ``(name, params)`` steps applied to the aggregate, in order.
        carry: aggregator parameters fed from the previous committed round (``{"init":
            "previous_aggregate"}`` for CClip's centre); before the first committed round they
            are zeros, as the CClip paper's momentum starts (Karimireddy, He & Jaggi, 2021).
        seed: the run's seed (bucketing permutations, post-aggregation noise).
        sources: ``"stage.param"`` → where the value came from (``shieldwall check`` prints it).
        fedml_name: the FedML ``defense_type`` this was built from, if any.
        notes: remarks on how the config was read (ignored FedML keys…).
    """

    aggregator: str
    params: dict[str, Any] = field(default_factory=dict)
    preaggregators: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    weighted: bool = False
    postaggregators: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    carry: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    sources: dict[str, str] = field(default_factory=dict)
    fedml_name: str | None = None
    notes: list[str] = field(default_factory=list)
    _states: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _previous: Tensor | None = field(default=None, init=False, repr=False)
    _largest_f: dict[tuple[int, ...], int] = field(default_factory=dict, init=False, repr=False)
    _filter_f_lowered: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        for key, entry, params in self.stages():
            factory = entry.meta.get("state")
            if factory is not None:
                self._states[key] = factory(**params)

    @property
    def label(self) -> str:
        return "+".join(
            [*(n for n, _ in self.preaggregators), self.aggregator,
             *(n for n, _ in self.postaggregators)]
        )

    def stages(self) -> list[tuple[str, Entry, dict[str, Any]]]:
        """``(key, entry, params)`` of every stage in order; keys ``pre0``, ``agg``, ``post0``…"""
        out = [(f"pre{i}", PREAGGREGATORS.entry(n), p)
               for i, (n, p) in enumerate(self.preaggregators)]
        out.append(("agg", AGGREGATORS.entry(self.aggregator), self.params))
        out += [(f"post{i}", POSTAGGREGATORS.entry(n), p)
                for i, (n, p) in enumerate(self.postaggregators)]
        return out

    @staticmethod
    def _evaluate(params: dict[str, Any], n: int) -> dict[str, Any]:
        return {k: v(n) if isinstance(v, PerRound) else v for k, v in params.items()}

    def __call__(
        self,
        updates: Tensor,
        f: int,
        weights: Tensor | None = None,
        *,
        client_ids: list[int] | tuple[int, ...] | None = None,
        round: int = 0,
        reference: Tensor | None = None,
        commit: bool = True,
        _start: int = 0,
    ) -> AggregateResult:
        """Aggregate ``updates`` (one row per client, ``client_ids`` in the same order).

        ``commit=False`` leaves every state untouched (probing calls). ``selected`` indexes
        ``updates`` rows while the rows still correspond to clients (no bucketing/mixing).
        ``_start`` skips the first pre-aggregation steps (probing what follows a filter).
        """
        rows, f_left, w = updates, f, weights
        ids = list(client_ids) if client_ids is not None else None
        index = torch.arange(updates.shape[0])
        aligned, pending = True, []
        for pos, (name, raw) in enumerate(self.preaggregators):
            if pos < _start:
                continue
            entry, n = PREAGGREGATORS.entry(name), rows.shape[0]
            kw = self._evaluate(raw, n)
            state = self._states.get(f"pre{pos}")
            if state is not None:
                kw.update(state.inputs(rows, ids))
                pending.append((state, rows, ids))
            if "generator" in entry.param_names():
                kw["generator"] = torch_generator(self.seed, "defense", round, pos)
            select = entry.meta.get("select")
            if select is not None:
                keep = select(rows, f_left, **kw).to("cpu")
                rows = rows[keep.to(rows.device)]
                index, w = index[keep], None if w is None else w[keep.to(w.device)]
                ids = None if ids is None else [ids[int(i)] for i in keep]
                if rows.shape[0] < n:
                    f_left = self._after_filter_f(pos + 1, rows.shape[0], f_left, name)
                continue
            rows = entry.obj(rows, f_left, **kw)
            f_after = entry.meta.get("f_after")
            if f_after is not None:
                f_left = int(f_after(n, f_left, **self._evaluate(raw, n)))
            if entry.name not in _ROW_WISE:
                aligned, w, ids = False, None, None

        entry = AGGREGATORS.entry(self.aggregator)
        kw = self._evaluate(self.params, rows.shape[0])
        accepted = entry.param_names()
        if self.weighted and w is not None and "weights" in accepted:
            kw["weights"] = w
        if self.carry:
            previous = self._previous
            fits = previous is not None and previous.shape == rows.shape[1:]
            carried = previous.to(rows) if fits else rows.new_zeros(rows.shape[1:])
            kw.update({p: carried for p in self.carry if p in accepted})
        state = self._states.get("agg")
        if state is not None:
            kw.update(state.inputs(rows, ids))
            pending.append((state, rows, ids))
        result = aggregate(entry.name, rows, f_left, **kw)
        vector = result.vector
        if commit:
            for st, st_rows, st_ids in pending:
                st.commit(st_rows, st_ids)
            if self.carry:
                self._previous = vector.detach().clone()
        if self.postaggregators:
            steps = [(n, self._evaluate(p, 1)) for n, p in self.postaggregators]
            vector = postaggregate_chain(
                vector, steps, reference=reference, seed=self.seed, round=round
            )
        if not aligned:
            return AggregateResult(vector)
        if result.selected is not None:
            return AggregateResult(vector, index[result.selected.to("cpu")])
        if len(index) < updates.shape[0]:
            return AggregateResult(vector, index)
        return AggregateResult(vector)

    def as_function(self):
        """``fn(updates, f) -> Tensor`` for adaptive attacks (probing: no state changes)."""
        return lambda updates, f: self(updates, f, commit=False).vector

    def largest_f(self, n: int, f: int) -> int:
        """The largest ``f' <= f`` with which this defense runs on ``n`` rows (``-1``: none,
        not even ``f' = 0``); probed on zeros without touching any state, cached per
        ``(n, f)``."""
        return self._probe_f(0, n, f)

    def _probe_f(self, start: int, n: int, f: int) -> int:
        """The largest ``f' <= f`` with which the stages from pre-aggregation step ``start`` on
        run on ``n`` rows of zeros (``-1``: none); cached."""
        key = (start, n, f)
        if key not in self._largest_f:
            found = -1
            for cand in range(min(f, n), -1, -1):
                try:
                    self(torch.zeros((n, 2)), cand, commit=False, _start=start)
                except ValueError:
                    continue
                found = cand
                break
            self._largest_f[key] = found
        return self._largest_f[key]

    def _after_filter_f(self, start: int, n: int, f: int, name: str) -> int:
        """The largest ``f' <= f`` with which the stages from pre-aggregation step ``start`` on
        run on the ``n`` rows a filter (``name``) left; raises ``ValueError`` if none does."""
        found = self._probe_f(start, n, f)
        if found < 0:
            raise ValueError(
                f"{self.label}: the {n} rows left by {name!r} are too few for what follows it, "
                "even with f=0"
            )
        if found < f and not self._filter_f_lowered:
            self._filter_f_lowered = True
            log.warning(
                "%s: the stages after %r cannot run on the %d rows it left with f=%d; using "
                "f=%d, their largest (logged once)", self.label, name, n, f, found,
            )
        return found

    def check_tolerates(self, n: int, f: int) -> None:
        """Raise :class:`ConfigError` when the rule cannot run with ``n`` rows and ``f``."""
        try:
            self(torch.zeros((n, 2)), f, commit=False)
        except ValueError as exc:
            origins = "; ".join(
                f"{key.split(':')[1]} from {src}" for key, src in self.sources.items()
                if not src.startswith(("default", "FedML"))
            )
            raise ConfigError(
                f"defense {self.label!r} cannot run with {n} clients per round and f={f}: {exc}"
                + (f" ({origins})" if origins else "")
                + ". Lower attack_args.byzantine_client_num (or "
                "defense_args.byzantine_client_num), add clients, or change the defense's "
                "parameters or defense_args.defense_type"
            ) from None

    def state_dict(self) -> dict[str, Any]:
        """Everything the defense carries across rounds (save it beside the model)."""
        previous = None if self._previous is None else self._previous.cpu()
        return {"stages": {k: s.state_dict() for k, s in self._states.items()},
                "previous": previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (the defense must be built from the same config)."""
        for key, stage_state in state.get("stages", {}).items():
            if key not in self._states:
                raise ValueError(f"defense state has stage {key!r} that {self.label!r} lacks")
            self._states[key].load_state_dict(stage_state)
        self._previous = state.get("previous")


def _parse_steps(raw: Any, key: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(raw, list):
        raise ConfigError(f"defense_args.{key} must be a list of names or {{name: {{params}}}}")
    steps: list[tuple[str, dict[str, Any]]] = []
    for item in raw:
        if isinstance(item, str):
            steps.append((item, {}))
        elif isinstance(item, dict) and len(item) == 1:
            (name, params), = item.items()
            if params is not None and not isinstance(params, Mapping):
                raise ConfigError(
                    f"defense_args.{key}: the parameters of {name!r} must be a mapping "
                    f"{{param: value}}, got {params!r}"
                )
            steps.append((str(name), dict(params or {})))
        else:
            raise ConfigError(
                f"defense_args.{key} entries must be a name or {{name: {{params}}}}, got {item!r}"
            )
    return steps


def _checked_steps(registry: Registry, steps: list[tuple[str, dict]], key: str) -> list[Step]:
    out = []
    for name, params in steps:
        try:
            entry = registry.entry(name)
        except UnknownNameError as exc:
            raise ConfigError(f"defense_args.{key}: {exc}") from None
        check_params(entry, params, f"defense_args.{key}.{entry.name}")
        params = convert_params(entry, params, f"defense_args.{key}.{entry.name}")
        out.append(Step(entry.name, params, {k: f"defense_args.{key} (file)" for k in params}))
    return out


def _unknown_defense(name: str) -> ConfigError:
    valid = sorted(set(AGGREGATORS.names()) | set(FEDML_DEFENSES))
    spellings = [*valid, *(a for e in AGGREGATORS for a in e.aliases)]
    hint = closest(str(name), spellings)
    if hint is not None and hint in AGGREGATORS:
        hint = AGGREGATORS.canonical(hint)
    return ConfigError(
        f"defense_args.defense_type: unknown aggregator {name!r}"
        + (f" (did you mean {hint!r}?)" if hint else "")
        + f"; valid defense names: {', '.join(valid)}"
    )


def build_defense(cfg: ExperimentConfig) -> Defense:
    """The defense ``cfg.defense_args`` describes (the weighted mean when disabled)."""
    d = cfg.defense_args
    seed = cfg.common_args.random_seed
    if not d.enable_defense or d.defense_type is None or str(d.defense_type).lower() == "none":
        return Defense("mean", weighted=True, seed=seed)
    params = dict(d.params)
    carry_previous = str(params.get("init")).lower() in ("previous", "previous_aggregate")
    if carry_previous:  # CClip's centre from the last aggregate (the paper's stateful variant)
        params.pop("init")
    user_post = _parse_steps(params.pop("postaggregators", []), "postaggregators")
    pre = _checked_steps(PREAGGREGATORS, _parse_steps(d.preaggregators, "preaggregators"),
                         "preaggregators")
    plan = plan_defense(cfg)
    if plan is None:
        try:
            entry = AGGREGATORS.entry(d.defense_type)
        except UnknownNameError:
            raise _unknown_defense(d.defense_type) from None
        plan = DefensePlan("", Step(entry.name), weighted=entry.name == "mean")
    agg, notes = plan.aggregator, list(plan.notes)
    if carry_previous:
        plan.carry["init"] = "previous_aggregate"
    agg_entry = AGGREGATORS.entry(agg.name)
    unknown = {}
    for key, value in params.items():
        if key in plan.used:
            continue
        origin = cfg.sources.get(f"defense_args.{key}", "file")
        if key in user_params(agg_entry) and key not in agg.params:
            agg.params[key], agg.sources[key] = value, f"defense_args.{key} ({origin})"
        elif key in FEDML_KEYS:
            notes.append(f"defense_args.{key} is not read by {str(d.defense_type)!r}; ignored")
        else:
            unknown[key] = value
    check_params(agg_entry, unknown, "defense_args")
    agg.params = convert_params(agg_entry, agg.params, "defense_args")
    post = plan.post + _checked_steps(POSTAGGREGATORS, user_post, "postaggregators")
    stages = [*(f"pre{i}:{s.name}" for i, s in enumerate(pre + plan.pre))]
    sources = {f"{key}.{p}": src for key, step in zip(stages, pre + plan.pre)
               for p, src in step.sources.items()}
    sources.update({f"agg:{agg.name}.{p}": src for p, src in agg.sources.items()})
    sources.update({f"post{i}:{s.name}.{p}": src for i, s in enumerate(post)
                    for p, src in s.sources.items()})
    return Defense(
        agg.name, dict(agg.params), [(s.name, dict(s.params)) for s in pre + plan.pre],
        weighted=plan.weighted, postaggregators=[(s.name, dict(s.params)) for s in post],
        carry=dict(plan.carry), seed=seed, sources=sources,
        fedml_name=plan.fedml_name or None, notes=notes,
    )


def resolve_f(cfg: ExperimentConfig) -> Resolved:
    """The number of Byzantine rows the defense tolerates, and where it comes from.

    ``defense_args.byzantine_client_num``, else ``attack_args.byzantine_client_num`` when the
    config sets it (FedML's Krum reads it from any section), else the attack's number of
    Byzantine clients (e.g. ``round(ratio_of_poisoned_client · clients)``), else 0.
    """
    d = cfg.defense_args
    if d.byzantine_client_num is not None:
        return setting(cfg, "defense_args", "byzantine_client_num")
    if "attack_args.byzantine_client_num" in cfg.sources:
        return setting(cfg, "attack_args", "byzantine_client_num")
    try:
        plan = plan_attack(cfg)
    except ConfigError:
        plan = None
    if plan is not None:
        return Resolved(plan.num_byzantine, plan.num_source)
    return Resolved(0, "default (no attack configured)")


def defense_f(cfg: ExperimentConfig) -> int:
    """The number of Byzantine rows the defense tolerates (see :func:`resolve_f`)."""
    return int(resolve_f(cfg).value)
