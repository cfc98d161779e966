"""``shieldwall run CONFIG`` (also under torchrun/mpirun) and ``shieldwall quickstart``."""

from __future__ import annotations

import argparse
import logging
from importlib import resources

from shieldwall.config import load_config

__all__ = [
    "register", "run_command", "quickstart_command", "QUICKSTART", "add_config", "config_path",
]

log = logging.getLogger(__name__)

QUICKSTART = "quickstart.yaml"
QUICKSTART_TEXT = "quickstart_text.yaml"


def add_config(p: argparse.ArgumentParser, help: str) -> None:
    """The config as a positional argument or as FedML's ``--cf`` / ``--yaml_config_file``."""
    p.add_argument("config", nargs="?", help=help)
    p.add_argument("--cf", "--yaml_config_file", dest="cf", metavar="CONFIG",
                   help="the config, as FedML's launch scripts pass it")
    p.add_argument("--run_id", help="FedML's run id (accepted, not used)")


def config_path(args: argparse.Namespace, *, optional: bool = False) -> str | None:
    """The config file given positionally or with ``--cf``; ValueError when missing/both."""
    if args.config and args.cf and args.config != args.cf:
        raise ValueError(f"two configs given: {args.config!r} and --cf {args.cf!r}; give one")
    path = args.config or args.cf
    if path is None and not optional:
        raise ValueError("give a CONFIG file (positionally or as --cf CONFIG)")
    return path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set train_args.comm_round=5",
    )
    p.add_argument("--log-dir", help="parent of the run directory (tracking_args.log_file_dir)")
    p.add_argument("--run-name", help="run directory name (tracking_args.run_name)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train with a config (simulator, torchrun or mpirun)")
    add_config(p, "YAML config (optional with --resume)")
    _resume_args(p)
    p.add_argument("--rank", type=int, help="FedML's process rank: with comm_args.runtime grpc "
                   "or a cross_silo config, 0 serves and K >= 1 runs client K (networked mode); "
                   "otherwise accepted (launchers set it)")
    p.add_argument("--role", help="FedML's role (server/client; checked against --rank in the "
                   "networked mode, otherwise ignored)")
    _common(p)
    p.set_defaults(func=run_command)

    q = sub.add_parser("quickstart", help="train on the embedded digits data, no files needed")
    q.add_argument("--text", action="store_true",
                   help="train a tiny ALBERT masked LM on the embedded text corpus instead")
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

    config = config_path(args, optional=True)
    if config is None:
        if not args.resume:
            raise ValueError("give a CONFIG file, or --resume RUN_DIR to continue a run")
        return load_run_config(args.resume, overrides)
    if args.force and not args.resume:
        raise ValueError("--force only applies with --resume RUN_DIR")
    return load_config(config, overrides)


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = list(args.overrides)
    if args.log_dir:
        extra.append(f"tracking_args.log_file_dir={args.log_dir}")
    if args.run_name:
        extra.append(f"tracking_args.run_name={args.run_name}")
    return extra


def _report(summary: dict) -> None:
    if summary and summary.get("test_perplexity") is not None:  # masked LM
        print(f"final validation loss {summary['final_test_loss']:.3f}, perplexity "
              f"{summary['test_perplexity']:.1f}, masked-token accuracy "
              f"{100 * summary['final_test_accuracy']:.2f}%  (run directory: "
              f"{summary['run_dir']})")
        return
    if summary:
        acc = summary.get("final_test_accuracy")
        acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%"
        if summary.get("diverged_at_round") is not None:
            print(f"the model diverged at round {summary['diverged_at_round']}; test accuracy "
                  f"of the model as it stood: {acc_text}  (run directory: {summary['run_dir']})")
            return
        print(f"final test accuracy: {acc_text}  (run directory: {summary['run_dir']})")


def run_command(args: argparse.Namespace) -> int:
    from shieldwall.train import train

    cfg = _load(args, _overrides(args))
    if _is_networked(args, cfg):
        return _networked(args, cfg)
    _report(train(cfg, resume=args.resume, force=args.force))
    return 0


def _is_networked(args: argparse.Namespace, cfg) -> bool:
    """``runtime: grpc``; or, as FedML's runner decides, a ``cross_silo`` config given a
    ``--rank``/``--role`` (hierarchical, or not under mpirun/torchrun) with ``runtime: auto``.
    Without either flag a ``cross_silo`` config runs in the simulator on this machine."""
    runtime = cfg.comm_args.runtime.strip().lower()
    if runtime == "grpc":
        return True
    if runtime != "auto" or (args.rank is None and args.role is None):
        return False
    if str(cfg.common_args.training_type).lower() != "cross_silo":
        return False
    from shieldwall.fedml.runner import launched

    return str(cfg.common_args.scenario).lower() == "hierarchical" or not launched()


def _networked(args: argparse.Namespace, cfg) -> int:
    """The networked mode: this process is the server (rank 0) or client K (``--rank K``), as
    ``shieldwall server``/``client`` would run it (FedML's ``--rank``/``--role`` launch)."""
    from shieldwall.commands._net import join, networked_role, serve

    rank = networked_role(args.rank, args.role)
    if rank == 0:
        _report(serve(cfg, resume=args.resume, force=args.force))
        return 0
    if args.resume or args.force:
        raise ValueError(f"--resume/--force apply to the server (rank 0), not client {rank}: "
                         "a client reconnects on its own")
    return join(cfg, rank)


def quickstart_command(args: argparse.Namespace) -> int:
    from shieldwall.train import train

    name = QUICKSTART_TEXT if getattr(args, "text", False) else QUICKSTART
    path = resources.files("shieldwall.configs").joinpath(name)
    with resources.as_file(path) as config:
        cfg = load_config(config, _overrides(args))
    summary = train(cfg)
    if name == QUICKSTART_TEXT and summary:
        _report_text(summary)
    else:
        _report(summary)
    return 0


def _report_text(summary: dict) -> None:
    """Validation perplexity at the first and last evaluation (a random model's is ~V)."""
    from shieldwall.metrics import read_metrics

    evals = [r for r in read_metrics(summary["run_dir"]) if r.get("test_perplexity")]
    if not evals:
        return
    first, last = evals[0], evals[-1]
    print(
        f"validation perplexity: {first['test_perplexity']:.1f} after round {first['round']} -> "
        f"{last['test_perplexity']:.1f} after round {last['round']}; masked-token accuracy "
        f"{100 * last['test_accuracy']:.1f}%  (run directory: {summary['run_dir']})"
    )
