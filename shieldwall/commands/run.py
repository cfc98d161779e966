"""``shieldwall run CONFIG`` (also under torchrun/mpirun) and ``shieldwall quickstart``."""

from __future__ import annotations

import argparse
import logging
from importlib import resources

from shieldwall.config import load_config

__all__ = ["register", "run_command", "quickstart_command", "QUICKSTART"]

log = logging.getLogger(__name__)

QUICKSTART = "quickstart.yaml"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set train_args.comm_round=5",
    )
    p.add_argument("--log-dir", help="parent of the run directory (tracking_args.log_file_dir)")
    p.add_argument("--run-name", help="run directory name (tracking_args.run_name)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train with a config (simulator, torchrun or mpirun)")
    p.add_argument("config", nargs="?", help="YAML config (optional with --resume)")
    _resume_args(p)
    p.add_argument("--rank", type=int, help="FedML's process rank (accepted; launchers set it)")
    p.add_argument("--role", help="FedML's role (accepted and ignored)")
    _common(p)
    p.set_defaults(func=run_command)

    q = sub.add_parser("quickstart", help="train on the embedded digits data, no files needed")
    _common(q)
    q.set_defaults(func=quickstart_command)


def _resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (its "
                   "config as of its last change, unless CONFIG is given)")
    p.add_argument("--force", action="store_true",
                   help="with --resume: let --set/CONFIG change what fixes the experiment "
                   "(seed, data, partition, model, algorithm, clients); recorded as forced")


def _load(args: argparse.Namespace, overrides: list[str]):
    """The config to run: CONFIG, or with only --resume the run's current config."""
    from shieldwall.rundir import load_run_config

    if args.config is None:
        if not args.resume:
            raise ValueError("give a CONFIG file, or --resume RUN_DIR to continue a run")
        return load_run_config(args.resume, overrides)
    if args.force and not args.resume:
        raise ValueError("--force only applies with --resume RUN_DIR")
    return load_config(args.config, overrides)


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = list(args.overrides)
    if args.log_dir:
        extra.append(f"tracking_args.log_file_dir={args.log_dir}")
    if args.run_name:
        extra.append(f"tracking_args.run_name={args.run_name}")
    return extra


def _report(summary: dict) -> None:
    if summary:
        acc = summary.get("final_test_accuracy")
        acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%"
        print(f"final test accuracy: {acc_text}  (run directory: {summary['run_dir']})")


def run_command(args: argparse.Namespace) -> int:
    from shieldwall.train import train

    cfg = _load(args, _overrides(args))
    _report(train(cfg, resume=args.resume, force=args.force))
    return 0


def quickstart_command(args: argparse.Namespace) -> int:
    from shieldwall.train import train

    path = resources.files("shieldwall.configs").joinpath(QUICKSTART)
    with resources.as_file(path) as config:
        cfg = load_config(config, _overrides(args))
    _report(train(cfg))
    return 0
