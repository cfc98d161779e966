"""``shieldwall byzshield …``: ByzShield's ``distributed_nn.py`` flags, on real processes.

ByzShield (github.com/kkonstantinidis/ByzShield) trains with
``mpirun -n N --hostfile HOSTS python distributed_nn.py --approach=mols --lr=0.05 …``:
rank 0 is the parameter server, ranks 1…N−1 the workers. Here the same flags (same names and
defaults as its ``add_fit_args``) become a shieldwall config (``redundancy_args`` and friends,
see ``docs/redundancy.md``) and the run starts

* under ``mpirun``/``torchrun`` (``mpirun -n 16 --hostfile HOSTS shieldwall byzshield …``):
  this process is one rank;
* with ``--hostfile`` outside a launcher: through ``mpirun -n N --hostfile HOSTS``, the
  rendezvous on the hostfile's first host;
* otherwise: ``--n`` local processes on 127.0.0.1, forked from a fork server that imported
  torch once (logs in ``LOG_DIR/RUN_NAME.ranks/``);
* with ``--simulate``: in this process (the simulator; same numbers).

Batch sizes follow ByzShield: for ``mols``/``rama_one``/``rama_two`` the ``--batch-size``
samples of a step are split into F files (b = ⌊batch/F⌋); DETOX groups and baseline workers
draw ``--batch-size`` samples per file. ``--lis-simulation simulate`` is ALIE with ByzShield's
z = 1; ``--err-mode foe`` is the inner-product attack −100·mean (ByzShield's FoE). Flags that
tune ByzShield's MPI transport or data loader (``--comm-type``, ``--compress-grad``,
``--bucket-size``, ``--num-aggregate``, ``--local-remote``, ``--test-batch-size``,
``--log-interval``, ``--no-cuda``, ``--adversarial``: ByzShield's code uses its constants −100)
are accepted and have no effect.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["register", "byzshield_command", "build_config", "FLAGS"]

log = logging.getLogger(__name__)

_NO_EFFECT = "accepted for ByzShield's scripts; no effect here"

#: (flag, type, default, help) — ByzShield's add_fit_args, same names and defaults
FLAGS: list[tuple[str, Any, Any, str]] = [
    ("--batch-size", int, 128, "samples per step (split into F files for mols/rama_*; per "
     "group/worker for draco-lite/baseline)"),
    ("--test-batch-size", int, 100, _NO_EFFECT),
    ("--max-steps", int, 10000, "the most steps (train_args.comm_round)"),
    ("--epochs", int, 100, "passes over the training set (redundancy_args.epochs)"),
    ("--lr", float, 0.01, "learning rate"),
    ("--momentum", float, 0.5, "SGD momentum"),
    ("--seed", int, 1, "random seed"),
    ("--log-interval", int, 10, _NO_EFFECT),
    ("--network", str, "LeNet", "model (LeNet, FC, ResNet18, VGG13, … or any shieldwall model)"),
    ("--mode", str, "normal", "aggregator: coord-median, bulyan, multi-krum, normal (mean), or "
     "any shieldwall aggregator"),
    ("--dataset", str, "MNIST", "data set (MNIST, Cifar10, SVHN, …)"),
    ("--comm-type", str, "Bcast", _NO_EFFECT),
    ("--err-mode", str, "rev_grad", "attack: rev_grad, constant, foe, or any update attack"),
    ("--approach", str, "maj_vote", "baseline, mols, rama_one, rama_two, draco-lite, "
     "draco_lite_attack, maj_vote"),
    ("--num-aggregate", int, 5, _NO_EFFECT),
    ("--eval-freq", int, 50, "model backup every this many steps (for shieldwall evaluate)"),
    ("--train-dir", str, None, "folder of the backups (default: RUN_DIR/backups)"),
    ("--adversarial", int, -100, _NO_EFFECT),
    ("--worker-fail", int, 2, "q, number of adversarial workers"),
    ("--group-size", int, 5, "r, workers per file"),
    ("--bucket-size", int, 0, _NO_EFFECT),
    ("--compress-grad", str, "compress", _NO_EFFECT),
    ("--checkpoint-step", int, 0, "0 (to continue a run: shieldwall run --resume RUN_DIR)"),
    ("--lis-simulation", str, "None", "simulate: ALIE (z = 1) at the PS; anything else: off"),
    ("--local-remote", str, "remote", _NO_EFFECT),
    ("--rama-m", int, -1, "rama_two's m (-1: m = r)"),
    ("--detox-attack", str, "worst", "worst, benign or whole_group (draco_lite_attack)"),
    ("--byzantine-gen", str, "random", "random or hard_coded (worst-case set)"),
    ("--gamma", float, 1.0, "learning-rate decay factor"),
    ("--lr-step", int, None, "decay period in steps (lr·gamma^(step // lr_step))"),
    # shieldwall's own
    ("--n", int, None, "processes = K + 1 (ByzShield's n; default: the launcher's world size)"),
    ("--hostfile", str, None, "MPI hostfile: start the ranks with mpirun on its hosts"),
    ("--data-dir", str, None, "data folder (data_args.data_cache_dir)"),
    ("--log-dir", str, "./runs", "parent of the run directory"),
    ("--run-name", str, None, "run directory name (default: byzshield-APPROACH-TIME)"),
    ("--round-timeout", float, 300.0, "seconds the PS waits for a step's gradients"),
    ("--on-worker-loss", str, "continue", "continue or stop when a worker is lost"),
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "byzshield", help="ByzShield/DETOX training with ByzShield's flags (PS + K workers)",
        description=__doc__.splitlines()[0],
    )
    for flag, typ, default, text in FLAGS:
        p.add_argument(flag, type=typ, default=default, help=text)
    p.add_argument("--simulate", action="store_true", help="run in this process (simulator)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="override any config value (repeatable)")
    p.set_defaults(func=byzshield_command)


def _argv(args: argparse.Namespace, drop: set[str]) -> list[str]:
    """The namespace back as ``--flag=value`` words (for the other ranks)."""
    out = []
    for flag, _, default, _ in FLAGS:
        dest = flag[2:].replace("-", "_")
        value = getattr(args, dest)
        if flag in drop or value is None or value == default:
            continue
        out.append(f"{flag}={value}")
    out += [f"--set={o}" for o in args.overrides]
    return out


def _approach_batch(approach: str) -> bool:
    """Whether ``--batch-size`` is split into the F files (ByzShield's own schemes)."""
    return approach.strip().lower().replace("-", "_") in ("mols", "rama_one", "rama_two")


def build_config(args: argparse.Namespace, num_workers: int, run_name: str) -> Any:
    """The shieldwall config of a ``byzshield`` command line for K = ``num_workers``."""
    from shieldwall.config import config_from_dict
    from shieldwall.redundancy.byzshield_names import BYZANTINE_GEN
    from shieldwall.redundancy.setup import resolve_setup

    if args.checkpoint_step:
        raise ValueError("--checkpoint-step: continue a run with `shieldwall run --resume "
                         "RUN_DIR` (its config.yaml holds these flags)")
    err = args.err_mode.strip().lower()
    attack_params: dict[str, Any] = {}
    lis = args.lis_simulation.strip().lower() == "simulate"
    if lis:
        attack_params = {"z": 1.0}  # ByzShield's _LIE_attack_simulation
    elif err == "foe":
        err, attack_params = "ipm", {"epsilon": 100.0}  # ByzShield's FoE: -100·mean
    mode = "mean" if args.mode.strip().lower() == "normal" else args.mode
    if args.on_worker_loss not in ("continue", "stop"):
        raise ValueError(f"--on-worker-loss must be continue or stop, got {args.on_worker_loss!r}")
    red = {
        "enable": True, "approach": args.approach, "group_size": args.group_size,
        "worker_fail": args.worker_fail, "rama_m": None if args.rama_m < 0 else args.rama_m,
        "err_mode": err, "attack_params": attack_params, "lis_simulation": lis, "mode": mode,
        "adversary_choice": BYZANTINE_GEN.get(args.byzantine_gen.strip().lower(),
                                              args.byzantine_gen),
        "detox_attack": args.detox_attack,
        "epochs": args.epochs, "gamma": args.gamma, "lr_step": args.lr_step,
        "eval_freq": args.eval_freq, "train_dir": args.train_dir,
    }
    raw = {
        "common_args": {"random_seed": args.seed},
        "data_args": {"dataset": args.dataset, "data_cache_dir": args.data_dir},
        "model_args": {"model": args.network},
        "train_args": {
            "federated_optimizer": "PS-SGD", "client_num_in_total": num_workers,
            "comm_round": args.max_steps, "batch_size": args.batch_size,
            "learning_rate": args.lr, "momentum": args.momentum,
            "checkpoint_frequency": args.eval_freq,
        },
        "validation_args": {"frequency_of_the_test": args.eval_freq},
        "device_args": {"num_threads": 1},
        "comm_args": {"round_timeout": args.round_timeout,
                      "on_worker_loss": args.on_worker_loss},
        "tracking_args": {"log_file_dir": args.log_dir, "run_name": run_name,
                          "enable_tensorboard": False, "progress_bar": False},
        "redundancy_args": red,
    }
    cfg = config_from_dict(raw, args.overrides, name="byzshield")
    files = resolve_setup(cfg.redundancy_args, num_workers).placement.num_files  # checks names
    if _approach_batch(args.approach):
        per_file = args.batch_size // files
        if per_file < 1:
            raise ValueError(f"--batch-size {args.batch_size} is smaller than the F = {files} "
                             f"files of {args.approach}: every file needs a sample")
        cfg.redundancy_args.files_batch_size = per_file
    return cfg


def _launched() -> int | None:
    env = os.environ
    world = env.get("WORLD_SIZE") if "RANK" in env else env.get("OMPI_COMM_WORLD_SIZE")
    return int(world) if world else None


def _first_host(hostfile: str) -> str:
    path = Path(hostfile)
    if not path.is_file():
        raise FileNotFoundError(f"--hostfile {hostfile} does not exist")
    for line in path.read_text().splitlines():
        word = line.split("#", 1)[0].split()
        if word:
            host = word[0]
            return "127.0.0.1" if host in ("localhost", "127.0.0.1") else host
    raise ValueError(f"--hostfile {hostfile} names no host")


def byzshield_command(args: argparse.Namespace) -> int:
    from shieldwall.train import train

    world = _launched()
    if world is not None and args.n is not None and args.n != world:
        raise ValueError(f"--n {args.n} but the launcher started {world} processes")
    n = world or args.n
    if n is None:
        raise ValueError("--n: give the number of processes (K workers + 1 parameter server)")
    if n < 2:
        raise ValueError(f"--n must be at least 2 (one PS and one worker), got {n}")
    run_name = args.run_name or f"byzshield-{args.approach}-{datetime.now():%Y%m%d-%H%M%S}"
    cfg = build_config(args, n - 1, run_name)  # checks every flag before starting anything
    if world is not None or args.simulate:
        if args.simulate:
            cfg.comm_args.runtime = "simulator"
        summary = train(cfg)
        if summary:
            _report(summary)
        return 0
    words = [*_argv(args, {"--run-name", "--hostfile"}), f"--run-name={run_name}",
             f"--n={n}"]
    if args.hostfile:
        return _mpirun(args.hostfile, n, words)
    return _local(n, words, Path(args.log_dir) / f"{run_name}.ranks", args.round_timeout)


def _report(summary: dict) -> None:
    acc = summary.get("final_test_accuracy")
    text = "n/a" if acc is None else f"{100 * acc:.2f}%"
    extra = f"; diverged at step {summary['diverged_at']}" if "diverged_at" in summary else ""
    print(f"final test accuracy: {text}{extra}  (run directory: {summary['run_dir']}; "
          f"backups: {summary.get('train_dir', 'none')})")


def _mpirun(hostfile: str, n: int, words: list[str]) -> int:
    from shieldwall.runtime.spawn import free_port

    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise ValueError("--hostfile needs mpirun on PATH (Debian: apt-get install openmpi-bin)")
    cmd = [mpirun, "-n", str(n), "--hostfile", hostfile,
           "-x", f"MASTER_ADDR={_first_host(hostfile)}", "-x", f"MASTER_PORT={free_port()}",
           "-x", "OMP_NUM_THREADS=1", "-x", "PYTHONPATH",
           sys.executable, "-m", "shieldwall", "byzshield", *words]
    log.info("starting %s", " ".join(cmd))
    return subprocess.call(cmd)


def _local(n: int, words: list[str], log_dir: Path, round_timeout: float) -> int:
    from shieldwall.runtime.spawn import spawn_local

    ranks = spawn_local(n, ["byzshield", *words], log_dir=log_dir, method="forkserver")
    print(f"started a parameter server and {n - 1} workers on 127.0.0.1 (logs: {log_dir})")
    code = ranks[0].wait()
    for r in ranks[1:]:
        if r.wait(max(30.0, round_timeout)) is None:
            r.kill()
    tail = ranks[0].log().strip().splitlines()[-1:] or [""]
    print(tail[0])
    return int(code or 0)
