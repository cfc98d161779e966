"""``shieldwall check CONFIG [--set SECTION.KEY=VALUE …]``: validate a config without training.

Prints the resolved plan: topology (algorithm, scenario), runtime, data set and partition, model,
workers and Byzantine workers, the attack and the defense pipeline with every parameter and where
its value came from (``section.key (file)``, ``(--set)``, ``default``). Exit 0 when the config
would run; otherwise one ``shieldwall: error: …`` line per problem (several are collected where
the checks are independent) and exit 2. Data presence is checked cheaply (the folder and a data
file in it exist); nothing is loaded.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shieldwall.commands.run import add_config, config_path
from shieldwall.config import load_config
from shieldwall.config.schema import ExperimentConfig

__all__ = ["register", "check_command", "check_config", "CheckReport"]

_NOT_DATA = frozenset({".md", ".txt", ".py", ".sh", ".json", ".yaml", ".yml", ".cfg"})


@dataclass
class CheckReport:
    """The plan as printable lines, and the problems found (empty: the config would run)."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        self.lines.append(f"{label:<10} {text}")

    def detail(self, text: str) -> None:
        self.lines.append(f"{'':<10}   {text}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="validate a config without training and print the resolved plan"
    )
    add_config(p, "YAML config (FedML layout)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), as for 'shieldwall run'",
    )
    p.set_defaults(func=check_command)


def check_command(args: argparse.Namespace) -> int:
    path = config_path(args)
    cfg = load_config(path, args.overrides)  # a config that does not load: one line
    report = check_config(cfg)
    print(f"shieldwall check: {path}")
    for line in report.lines:
        print(f"  {line}")
    for problem in report.problems:
        print(f"shieldwall: error: {problem}", file=sys.stderr)
    if report.problems:
        print(f"{len(report.problems)} problem(s): the config would not run", file=sys.stderr)
        return 2
    print("OK: the config would run")
    return 0


def _src(cfg: ExperimentConfig, section: str, key: str) -> str:
    return f"{section}.{key} ({cfg.sources.get(f'{section}.{key}', 'default')})"


def _holds_data(folder: Path) -> bool:
    try:
        return any(p.is_file() and p.suffix.lower() not in _NOT_DATA and p.name != "SHA256SUMS"
                   for p in folder.iterdir())
    except OSError:
        return False


def _check_data(cfg: ExperimentConfig, report: CheckReport) -> None:
    from shieldwall.config.fedml import unsupported_dataset
    from shieldwall.data import DATASETS, DataNotFoundError
    from shieldwall.data.files import locate
    from shieldwall.registry import UnknownNameError

    d = cfg.data_args
    refused = unsupported_dataset(d.dataset, DATASETS.names())
    if refused:
        report.problems.append(refused)
        return
    try:
        entry = DATASETS.entry(d.dataset)
    except UnknownNameError as exc:
        report.problems.append(f"data_args.dataset: {exc}")
        return
    where = "embedded (no files needed)"
    folders = entry.meta.get("folders")
    if folders is not None:
        try:
            found = locate(entry.name, d.data_cache_dir, folders, _holds_data,
                           [f"of {entry.name}"])
            where = f"files in {found} [{_src(cfg, 'data_args', 'data_cache_dir')}]"
        except DataNotFoundError as exc:
            report.problems.append(f"data_args.data_cache_dir: {exc}")
            where = "not found"
    report.add("data", f"{entry.name} [{_src(cfg, 'data_args', 'dataset')}]: {where}")
    alpha = (f", alpha {d.partition_alpha} [{_src(cfg, 'data_args', 'partition_alpha')}]"
             if d.partition_method.lower() in ("hetero", "dirichlet", "non-iid", "noniid") else "")
    report.detail(f"partition {d.partition_method} "
                  f"[{_src(cfg, 'data_args', 'partition_method')}]{alpha}")


def _check_model(cfg: ExperimentConfig, report: CheckReport) -> None:
    from shieldwall.config.fedml import unsupported_model
    from shieldwall.models import MODELS
    from shieldwall.registry import UnknownNameError

    name = cfg.model_args.model
    refused = unsupported_model(name, MODELS.names())
    if refused:
        report.problems.append(refused)
        return
    try:
        from shieldwall.train import fedml_model_name

        shown = MODELS.canonical(fedml_model_name(cfg))
        report.add("model", f"{shown} [{_src(cfg, 'model_args', 'model')}]"
                            + (" (FedML's lr: sigmoid outputs)" if shown == "fedml_lr" else ""))
    except UnknownNameError as exc:
        report.problems.append(f"model_args.model: {exc}")


def _check_topology(cfg: ExperimentConfig, report: CheckReport) -> None:
    from shieldwall.algorithms import ALGORITHMS
    from shieldwall.registry import UnknownNameError
    from shieldwall.train import select_runtime

    t = cfg.train_args
    try:
        algorithm = (
            "BTARD" if str(t.federated_optimizer).upper() == "BTARD"
            else ALGORITHMS.canonical(t.federated_optimizer)
        )
        report.add("topology", f"{algorithm} [{_src(cfg, 'train_args', 'federated_optimizer')}], "
                               f"scenario {cfg.common_args.scenario}")
    except UnknownNameError as exc:
        report.problems.append(f"train_args.federated_optimizer: {exc}")
    if cfg.common_args.scenario.lower() == "hierarchical":
        s = cfg.client_silo_args
        report.detail(f"silos of {s.n_node_in_silo} node(s) x {s.n_proc_per_node} process(es)")
    report.add("runtime", f"{select_runtime(cfg)} [{_src(cfg, 'comm_args', 'runtime')}; "
                          f"backend {cfg.comm_args.backend}]")
    report.detail(f"{t.comm_round} rounds [{_src(cfg, 'train_args', 'comm_round')}], "
                  f"{t.epochs} local epoch(s), batch {t.batch_size}, lr {t.learning_rate}")
    if algorithm_is(t.federated_optimizer, ("FedOpt",)):
        from shieldwall.algorithms import ALGORITHMS

        fixed = getattr(ALGORITHMS.get(t.federated_optimizer), "optimizer_name", None)
        report.detail(f"server optimizer {fixed or t.server_optimizer}, server_lr {t.server_lr}, "
                      f"server_momentum {t.server_momentum}")
    if algorithm_is(t.federated_optimizer, ("FedProx",)):
        report.detail(f"fedprox_mu {t.fedprox_mu}")
    kind = "FedML" if cfg.common_args.fedml_semantics == "on" else "shieldwall"
    report.add("semantics", f"{kind} [{_src(cfg, 'common_args', 'fedml_semantics')}] "
                            "(docs/fedml_compat.md)")


def algorithm_is(name: str, families: tuple[str, ...]) -> bool:
    """Whether ``name`` is a registered algorithm of one of ``families`` (or a subclass)."""
    from shieldwall.algorithms import ALGORITHMS
    from shieldwall.registry import UnknownNameError

    try:
        cls = ALGORITHMS.get(name)
    except UnknownNameError:
        return False
    return any(base.__name__ in families for base in cls.__mro__)


def _params_text(
    entry: Any, params: dict[str, Any], sources: dict[str, str], key: str
) -> list[str]:
    from shieldwall.algorithms.defense import user_params

    try:
        signature = inspect.signature(entry.obj).parameters
    except (TypeError, ValueError):
        signature = {}
    out = []
    for name in user_params(entry):
        if name in params:
            out.append(f"{name} = {params[name]!r} [{sources.get(f'{key}.{name}', 'config')}]")
        elif name in signature and signature[name].default is not inspect.Parameter.empty:
            out.append(f"{name} = {signature[name].default!r} [default]")
        else:
            out.append(f"{name}: required, not set")
    return out


def _check_attack(cfg: ExperimentConfig, report: CheckReport) -> Any:
    from shieldwall.algorithms.adversary import plan_attack
    from shieldwall.attacks import ATTACKS

    try:
        plan = plan_attack(cfg)
    except ValueError as exc:
        report.problems.append(str(exc))
        return None
    if plan is None:
        report.add("attack", "none")
        return None
    label = plan.name + (f" (FedML {plan.fedml_name})" if plan.fedml_name else "")
    who = (f"clients {list(plan.fixed_ids)}" if plan.fixed_ids is not None else
           "drawn anew each round" if plan.redraw else "drawn once from the seed")
    report.add("attack", f"{label} by {plan.num_byzantine} Byzantine client(s) "
                         f"[{plan.num_source}], {who}")
    end = "the end" if plan.end is None else plan.end
    rounds = "" if plan.rounds is None else f", only rounds {sorted(plan.rounds)} (0-based)"
    report.detail(f"active rounds {plan.start}..{end}{rounds}, probability {plan.prob.value} "
                  f"[{plan.prob.source}]")
    entry = ATTACKS.entry(plan.name)
    sources = {f"attack.{k}": v for k, v in plan.sources.items()}
    for line in _params_text(entry, plan.params, sources, "attack"):
        report.detail(line)
    for note in plan.notes:
        report.detail(f"note: {note}")
    return plan


def _check_defense(cfg: ExperimentConfig, report: CheckReport, attack: Any) -> None:
    from shieldwall.algorithms.defense import build_defense, resolve_f

    t = cfg.train_args
    per_round = t.client_num_per_round or t.client_num_in_total
    f = resolve_f(cfg)
    byz = "none" if attack is None else str(attack.num_byzantine)
    report.add("workers", f"{t.client_num_in_total} clients "
                          f"[{_src(cfg, 'train_args', 'client_num_in_total')}], {per_round} per "
                          f"round, Byzantine: {byz}; the defense tolerates f = {f.value} "
                          f"[{f.source}]")
    try:
        defense = build_defense(cfg)
    except ValueError as exc:
        report.problems.append(str(exc))
        return
    if not cfg.defense_args.enable_defense:
        report.add("defense", "none: FedAvg's sample-weighted mean")
        return
    fedml = f" (FedML {defense.fedml_name})" if defense.fedml_name else ""
    report.add("defense", f"{defense.label}{fedml}")
    for key, entry, params in defense.stages():
        stage = f"{key}:{entry.name}"
        weighted = " (weighted by sample counts)" if key == "agg" and defense.weighted else ""
        carry = "".join(f", {p} = previous round's aggregate" for p in defense.carry)
        kind = {"pre": "pre-aggregation", "agg": "aggregator", "pos": "post-aggregation"}[key[:3]]
        extra = weighted + (carry if key == "agg" else "")
        report.detail(f"{key:<5} {kind} {entry.name}{extra}")
        for line in _params_text(entry, params, defense.sources, stage):
            report.detail(f"        {line}")
    for note in defense.notes:
        report.detail(f"note: {note}")
    try:
        defense.check_tolerates(per_round, int(f.value))
    except ValueError as exc:
        report.problems.append(str(exc))


def check_config(cfg: ExperimentConfig) -> CheckReport:
    """Run every independent check on ``cfg``; never raises for a problem of the config."""
    from shieldwall.drivers import select_driver

    report = CheckReport()
    try:
        select_driver(cfg)  # a config two drivers claim would not run
    except ValueError as exc:
        report.problems.append(str(exc))
    for check in (_check_topology, _check_data, _check_model):
        try:
            check(cfg, report)
        except ValueError as exc:
            report.problems.append(str(exc))
    if str(cfg.train_args.federated_optimizer).upper() == "BTARD":
        _check_btard(cfg, report)
    elif cfg.redundancy_args.enable:
        _check_redundancy(cfg, report)
    else:
        attack = _check_attack(cfg, report)
        _check_defense(cfg, report, attack)
    return report


def _check_btard(cfg: ExperimentConfig, report: CheckReport) -> None:
    """BTARD has no server: its aggregation and checks come from ``btard_args``."""
    from shieldwall.btard.run import byzantine_peers, protocol_config

    try:
        proto = protocol_config(cfg)
        peers = byzantine_peers(cfg, num_classes=10)
    except ValueError as exc:
        report.problems.append(str(exc))
        return
    n = cfg.train_args.client_num_in_total
    report.add("defense", f"butterfly CenteredClip (tau {proto.tau}) over {n} peers, "
                          f"{proto.validators} validator(s) per step, checks {proto.check_mode}")
    if peers:
        behaviour = next(iter(peers.values())).name
        report.add("attack", f"{behaviour} by {len(peers)} Byzantine peer(s) {sorted(peers)}")
    else:
        report.add("attack", "none")


def _check_redundancy(cfg: ExperimentConfig, report: CheckReport) -> None:
    """DETOX/ByzShield runs vote per file, then aggregate (``redundancy_args``)."""
    from shieldwall.redundancy.setup import resolve_setup

    try:
        setup = resolve_setup(cfg.redundancy_args, cfg.train_args.client_num_in_total)
    except ValueError as exc:
        report.problems.append(str(exc))
        return
    p = setup.placement
    report.add("defense", f"{setup.approach}: {p.num_workers} workers x {p.num_files} files, "
                          f"r = {p.replication}, majority vote then {setup.aggregator} "
                          f"(f={setup.f})")
    report.add("attack", f"{setup.attack} by q={setup.q} {setup.adversary_choice} adversaries "
                         f"(worst case controls {setup.c_max} files)")
