"""FedML's security vocabulary: where keys are found, and what FedML's defense names mean here.

FedML reads every key from one flat namespace, so a FedML config may put Krum's
``byzantine_client_num`` under ``attack_args`` or SLSGD's ``alpha`` under ``defense_args``.
:func:`lookup` looks for a key in the sections in :data:`SEARCH_ORDER` (defense, attack, train,
data, …) and returns the value with its origin (``attack_args.byzantine_client_num (file)``,
``--set``, ``default``), which ``shieldwall check`` prints for every parameter.

:data:`FEDML_DEFENSES` maps each of FedML's ``defense_type`` names to a :class:`DefensePlan`:
pre-aggregation steps, an aggregator and post-aggregation steps from shieldwall's registries,
with FedML's keys translated (``beta`` → ``b = ⌊β·n⌋``, ``batch_num`` → bucket size
``⌈n/batch_num⌉``, ``norm_bound`` → clipping threshold …). Attack names are mapped by
:mod:`shieldwall.algorithms.adversary` with the same helpers. ``docs/fedml_compat.md`` lists where
shieldwall's published algorithm differs from FedML's code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import ExperimentConfig
from shieldwall.registry import normalize_name

__all__ = [
    "SEARCH_ORDER",
    "Resolved",
    "PerRound",
    "Step",
    "DefensePlan",
    "Reader",
    "lookup",
    "setting",
    "plan_defense",
    "FEDML_DEFENSES",
    "FEDML_KEYS",
    "UNSUPPORTED_DATASETS",
    "UNSUPPORTED_MODELS",
    "unsupported_dataset",
    "unsupported_model",
    "fedml_semantics",
]

#: Sections searched for a FedML key, in order (FedML itself has one flat namespace).
SEARCH_ORDER = (
    "defense_args", "attack_args", "train_args", "data_args", "model_args", "common_args",
    "validation_args", "device_args", "comm_args", "tracking_args",
)

_MISSING = object()


@dataclass(frozen=True)
class Resolved:
    """A value and where it came from (``section.key (file|--set)`` or ``default``)."""

    value: Any
    source: str


@dataclass(frozen=True)
class PerRound:
    """A parameter computed at aggregation time from the number ``n`` of rows at its stage."""

    fn: Callable[[int], Any]
    text: str

    def __call__(self, n: int) -> Any:
        return self.fn(n)

    def __repr__(self) -> str:
        return self.text


@dataclass
class Step:
    """One stage of a defense pipeline: a registry name, its parameters and their origins."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class DefensePlan:
    """What a FedML ``defense_type`` becomes in shieldwall."""

    fedml_name: str
    aggregator: Step
    pre: list[Step] = field(default_factory=list)
    post: list[Step] = field(default_factory=list)
    weighted: bool = False
    carry: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def lookup(
    cfg: ExperimentConfig, key: str, sections: tuple[str, ...] = SEARCH_ORDER
) -> Resolved | None:
    """The first section in ``sections`` where ``key`` was set (file or ``--set``), or ``None``."""
    for section in sections:
        origin = cfg.sources.get(f"{section}.{key}")
        if origin is None:
            continue
        body = getattr(cfg, section)
        params = getattr(body, "params", {})
        if key in params:
            return Resolved(params[key], f"{section}.{key} ({origin})")
        if hasattr(body, key):
            return Resolved(getattr(body, key), f"{section}.{key} ({origin})")
    return None


def setting(cfg: ExperimentConfig, section: str, key: str) -> Resolved:
    """A schema field's value with its origin (``default`` when the config does not set it)."""
    origin = cfg.sources.get(f"{section}.{key}", "default")
    return Resolved(getattr(getattr(cfg, section), key), f"{section}.{key} ({origin})")


def _number(kind: type, value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if kind is int:
        if not number.is_integer():
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(number)
    return number


class Reader:
    """Reads the FedML keys of one defense or attack, recording each value's origin.

    Args:
        cfg: the config.
        what: the FedML name being read (for messages).
        home: the section named in messages about missing keys.
    """

    def __init__(self, cfg: ExperimentConfig, what: str, home: str = "defense_args") -> None:
        self.cfg, self.what, self.home = cfg, what, home
        self.used: set[str] = set()
        self.notes: list[str] = []

    def get(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        kind: type | None = float,
        check: Callable[[Any], bool] | None = None,
        expect: str = "",
    ) -> Resolved:
        """``key`` from the config (any section), else ``default``; ConfigError when required."""
        found = lookup(self.cfg, key)
        if found is None:
            if default is _MISSING:
                raise ConfigError(
                    f"{self.home}.{key} is required by FedML's {self.what!r}"
                    + (f" ({expect})" if expect else "")
                )
            return Resolved(default, "default")
        self.used.add(key)
        where = found.source.split(" ")[0]
        value = found.value if kind is None or found.value is None else _number(
            kind, found.value, where
        )
        if check is not None and value is not None and not check(value):
            raise ConfigError(f"{where} must be {expect}, got {found.value!r}")
        return Resolved(value, found.source)


def _step(name: str, **params: Resolved) -> Step:
    return Step(
        name,
        {k: r.value for k, r in params.items()},
        {k: r.source for k, r in params.items()},
    )


def _mean(r: Reader, name: str, *, pre: list[Step] | None = None,
          post: list[Step] | None = None) -> DefensePlan:
    return DefensePlan(name, Step("mean"), pre or [], post or [], weighted=True)


def _krum(r: Reader, name: str) -> DefensePlan:
    m = r.get("krum_param_m", None, kind=int, check=lambda v: v >= 1, expect="an integer >= 1")
    if name == "krum" and m.value in (None, 1):
        return DefensePlan(name, Step("krum"))
    if m.value is None:
        r.notes.append("multikrum without krum_param_m averages m = n - f rows (FedML: m = 1)")
        return DefensePlan(name, Step("multikrum"))
    return DefensePlan(name, _step("multikrum", m=m))


def _trimmed_mean(r: Reader, name: str) -> DefensePlan:
    beta = r.get("beta", None, check=lambda v: 0 <= v < 0.5, expect="a fraction in [0, 0.5)")
    if beta.value is None:
        r.notes.append("trimmed_mean without beta trims b = f values at each end")
        return DefensePlan(name, Step("trimmed_mean"))
    b = PerRound(lambda n, v=beta.value: math.floor(v * n), f"floor({beta.value}·n)")
    return DefensePlan(name, _step("trimmed_mean", b=Resolved(b, beta.source)))


def _bucket_size(batch_num: int) -> PerRound:
    return PerRound(lambda n: max(1, math.ceil(n / batch_num)), f"ceil(n/{batch_num})")


def _geo_median(r: Reader, name: str) -> DefensePlan:
    batch = r.get("batch_num", None, kind=int, check=lambda v: v >= 1, expect="an integer >= 1")
    if batch.value is None:
        return DefensePlan(name, Step("geometric_median"))
    s = Resolved(_bucket_size(batch.value), batch.source)
    return DefensePlan(name, Step("geometric_median"), [_step("bucketing", s=s)])


def _rfa(r: Reader, name: str) -> DefensePlan:
    return DefensePlan(name, Step("geometric_median"), weighted=True)


def _slsgd(r: Reader, name: str) -> DefensePlan:
    b = r.get("trim_param_b", 0, kind=int, check=lambda v: v >= 0, expect="an integer >= 0")
    alpha = r.get("alpha", 1.0, check=lambda v: 0 <= v <= 1, expect="in [0, 1]")
    option = r.get("option_type", 2, kind=int, check=lambda v: v in (1, 2), expect="1 or 2")
    return DefensePlan(name, _step("slsgd", trim_param_b=b, alpha=alpha, option_type=option))


def _cclip(r: Reader, name: str) -> DefensePlan:
    tau = r.get("tau", 10.0, check=lambda v: v > 0, expect="the clipping radius, > 0")
    if tau.source == "default":
        r.notes.append("cclip without tau clips at FedML's default radius 10")
    size = r.get("bucket_size", 1, kind=int, check=lambda v: v >= 1, expect="an integer >= 1")
    pre = [_step("bucketing", s=size)] if size.value > 1 else []
    plan = DefensePlan(name, _step("centered_clip", tau=tau), pre)
    plan.carry["init"] = "previous_aggregate"
    return plan


def _crfl(r: Reader, name: str) -> DefensePlan:
    from shieldwall.postaggregators.crfl import THRESHOLD_SCHEDULES

    clip = r.get("clip_threshold", None, check=lambda v: v > 0, expect="> 0")
    sigma = r.get("sigma", 0.01, check=lambda v: v >= 0, expect=">= 0")
    dataset = setting(r.cfg, "data_args", "dataset")
    schedule = {"lending_club_loan": "loan"}.get(str(dataset.value), str(dataset.value).lower())
    params = {"clip_threshold": clip, "sigma": sigma,
              "num_rounds": setting(r.cfg, "train_args", "comm_round"),
              "server_lr": setting(r.cfg, "train_args", "server_lr")}
    if schedule in THRESHOLD_SCHEDULES:
        params["threshold_schedule"] = Resolved(schedule, dataset.source)
    elif clip.value is None:
        raise ConfigError(
            f"defense_args.clip_threshold is required by FedML's 'crfl' for data set "
            f"{dataset.value!r} (CRFL's growing threshold is defined for mnist, emnist and "
            "lending_club_loan only)"
        )
    return _mean(r, name, post=[_step("crfl", **params)])


def _norm_diff_clipping(r: Reader, name: str) -> DefensePlan:
    bound = r.get("norm_bound", check=lambda v: v > 0, expect="the L2 bound of each update, > 0")
    return _mean(r, name, pre=[_step("clipping", c=bound)])


def _robust_lr(r: Reader, name: str) -> DefensePlan:
    theta = r.get("robust_threshold", check=lambda v: v >= 0, expect="a count of clients >= 0")
    return DefensePlan(name, _step("robust_learning_rate", robust_threshold=theta), weighted=True)


def _weak_dp(r: Reader, name: str) -> DefensePlan:
    std = r.get("stddev", check=lambda v: v >= 0, expect="the noise standard deviation, >= 0")
    bound = r.get("norm_bound", None, check=lambda v: v > 0, expect="> 0")
    pre = [_step("clipping", c=bound)] if bound.value is not None else []
    lr = setting(r.cfg, "train_args", "server_lr")
    return _mean(r, name, pre=pre, post=[_step("weak_dp", stddev=std, server_lr=lr)])


def _sigma_filter(score: str) -> Callable[[Reader, str], DefensePlan]:
    def plan(r: Reader, name: str) -> DefensePlan:
        k = r.get("bound_param", 3.0, check=lambda v: v > 0, expect="> 0")
        size = r.get("bucketing_batch_size", 1, kind=int, check=lambda v: v >= 1,
                     expect="an integer >= 1")
        for key in ("pretraining_round_num", "to_keep_higher_scores"):
            if r.get(key, None, kind=None).value is not None:
                r.notes.append(f"{key} is FedML-specific and ignored (see docs/fedml_compat.md)")
        pre = [_step("three_sigma", score=Resolved(score, f"FedML's {name!r}"), bound_param=k)]
        if size.value > 1:
            pre.append(_step("bucketing", s=size))
        return _mean(r, name, pre=pre)

    return plan


def _anomaly(r: Reader, name: str) -> DefensePlan:
    bound = r.get("cosine_similarity_bound", 0.3, check=lambda v: 0 <= v <= 2,
                  expect="a cosine distance in [0, 2]")
    k = r.get("bound_param", 3.0, check=lambda v: v > 0, expect="> 0")
    return _mean(r, name, pre=[_step("anomaly_detection", cosine_similarity_bound=bound,
                                     bound_param=k)])


#: FedML ``defense_type`` → plan builder ``(reader, name) -> DefensePlan``.
FEDML_DEFENSES: dict[str, Callable[[Reader, str], DefensePlan]] = {
    "krum": _krum,
    "multikrum": _krum,
    "trimmed_mean": _trimmed_mean,
    "wise_median": lambda r, name: DefensePlan(name, Step("median")),
    "geo_median": _geo_median,
    "geometric_median": _geo_median,
    "rfa": _rfa,
    "slsgd": _slsgd,
    "cclip": _cclip,
    "crfl": _crfl,
    "foolsgold": lambda r, name: DefensePlan(name, Step("foolsgold")),
    "norm_diff_clipping": _norm_diff_clipping,
    "robust_learning_rate": _robust_lr,
    "weak_dp": _weak_dp,
    "3sigma": _sigma_filter("foolsgold"),
    "3sigma_foolsgold": _sigma_filter("foolsgold"),
    "3sigma_geo": _sigma_filter("geomedian"),
    "3sigma_krum": _sigma_filter("krum"),
    "anomaly_detection": _anomaly,
}

#: Every key a FedML attack or defense reads: left-over ones are ignored, not errors.
FEDML_KEYS = frozenset({
    "krum_param_m", "beta", "batch_num", "trim_param_b", "alpha", "option_type", "tau",
    "bucket_size", "clip_threshold", "sigma", "norm_bound", "robust_threshold", "stddev",
    "bucketing_batch_size", "pretraining_round_num", "to_keep_higher_scores", "bound_param",
    "cosine_similarity_bound", "original_class_list", "target_class_list",
    "ratio_of_poisoned_client", "poison_start_round_id", "poison_end_round_id",
    "malicious_client_id", "scale_factor_S", "attack_training_rounds", "attack_prob",
    "byzantine_client_num", "attack_mode", "attack_type", "defense_type",
})


def plan_defense(cfg: ExperimentConfig) -> DefensePlan | None:
    """The plan for a FedML ``defense_type``; ``None`` for names that are not FedML's."""
    name = normalize_name(str(cfg.defense_args.defense_type))
    builder = FEDML_DEFENSES.get(name)
    if builder is None:
        return None
    reader = Reader(cfg, name)
    plan = builder(reader, name)
    plan.used |= reader.used
    plan.notes += reader.notes
    return plan


#: FedML data set names shieldwall does not ship, with what they are.
UNSUPPORTED_DATASETS: dict[str, str] = {
    "shakespeare": "LEAF's next-character prediction text",
    "fed_shakespeare": "TFF's federated Shakespeare text",
    "femnist": "LEAF's federated EMNIST", "fed_emnist": "TFF's federated EMNIST",
    "emnist": "EMNIST", "fed_cifar100": "TFF's federated CIFAR-100 (use cifar100)",
    "cinic10": "CINIC-10", "stackoverflow_lr": "Stack Overflow tag prediction",
    "stackoverflow_nwp": "Stack Overflow next-word prediction", "sent140": "Sentiment140",
    "reddit": "Reddit comments", "synthetic": "LEAF's synthetic data",
    "lending_club_loan": "Lending Club loans (tabular)", "nus_wide": "NUS-WIDE (vertical FL)",
    "uci": "UCI tabular data", "imagenet": "ImageNet", "ilsvrc2012": "ImageNet",
    "gld23k": "Google Landmarks", "gld160k": "Google Landmarks", "celeba": "CelebA",
    "cora": "a graph data set", "citeseer": "a graph data set", "pubmed": "a graph data set",
    "moleculenet": "graph data sets", "sider": "a graph data set", "tox21": "a graph data set",
    "clintox": "a graph data set", "bbbp": "a graph data set", "bace": "a graph data set",
    "esol": "a graph data set", "freesolv": "a graph data set", "lipo": "a graph data set",
}

#: FedML model names shieldwall does not ship, with what they are.
UNSUPPORTED_MODELS: dict[str, str] = {
    "rnn": "FedML's character LSTM for Shakespeare; no text data is shipped",
    "rnn_fedshakespeare": "a character LSTM for Shakespeare; no text data is shipped",
    "rnn_stackoverflow": "an LSTM for Stack Overflow; no text data is shipped",
    "lstm": "an LSTM language model; no text data is shipped",
    "mobilenet": "MobileNet", "mobilenet_v3": "MobileNetV3", "efficientnet": "EfficientNet",
    "gcn": "a graph network", "gat": "a graph network", "sage": "a graph network",
    "gin": "a graph network", "darts": "a NAS search space",
    "vfl_classifier": "a vertical-FL model",
}


def _unsupported(
    kind: str, key: str, name: str, table: dict[str, str], valid: list[str]
) -> str | None:
    what = table.get(normalize_name(name))
    if what is None:
        return None
    return (f"{key}: {kind} {name!r} ({what}) is not supported by shieldwall; "
            f"use one of: {', '.join(valid)}")


def unsupported_dataset(name: str, valid: list[str]) -> str | None:
    """One line refusing a FedML data set shieldwall does not ship, or ``None``."""
    return _unsupported("data set", "data_args.dataset", name, UNSUPPORTED_DATASETS, valid)


def unsupported_model(name: str, valid: list[str]) -> str | None:
    """One line refusing a FedML model shieldwall does not ship, or ``None``."""
    return _unsupported("model", "model_args.model", name, UNSUPPORTED_MODELS, valid)


def fedml_semantics(cfg: ExperimentConfig) -> bool:
    """Whether to follow FedML's behaviour (``common_args.fedml_semantics``, resolved at load)."""
    return normalize_name(str(cfg.common_args.fedml_semantics)) == "on"
