"""``shieldwall ddp``: fault-tolerant data-parallel training (redundant sub-batches, correction).

The fault-tolerant DDP simulator's command line works as typed (its flags ``-e``, ``-gb``,
``-df``, ``-tb``, ``--worker``, ``--global_batch_size``, ``--data_coll_path`` and its defaults of
3 epochs and a global batch of 512), and so do its console lines (``-q`` for the summary only).

Examples::

    shieldwall ddp -d mnist -w 16 -f 0 1 2 3 4 --correct -e 3 -gb 512 -df median -tb runs \\
        --data-dir ../shared/datasets                 # the simulator's example (data: ./data)
    shieldwall ddp -d mnist --data-dir /work/shared/datasets -w 16 -f 0 1 2 3 4 --correct \\
        --fault sign_flip --fault-scale 10 -df trimmed_mean --tb runs/ddp-mnist
    shieldwall ddp --config ddp.yaml --proc 4          # 4 gloo processes on 127.0.0.1
    torchrun --nproc_per_node 4 -m shieldwall ddp -w 16 -f 3 --correct
    shieldwall --debug ddp -w 8 -f 1 --epoch 1         # prints every step's worker → batch map

Flags override the ``ddp_args`` of ``--config``. The run ends by printing the final test accuracy,
the convicted workers and the redundancy's compute overhead.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from shieldwall.fault_tolerance.config import load_ddp_config
from shieldwall.fault_tolerance.console import SeedConsole

__all__ = ["register", "ddp_command", "report"]

log = logging.getLogger(__name__)


def _key_value(text: str) -> tuple[str, Any]:
    from shieldwall.config.loader import yaml_value

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml_value(value)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ddp",
        help="fault-tolerant data-parallel training: detect faulty workers, correct them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # every default is None: unset flags leave the YAML (or the built-in default) alone. The
    # fault-tolerant DDP simulator's own spellings (-e, -gb, -df, -tb, --worker,
    # --global_batch_size, --data_coll_path) are accepted beside ours.
    p.add_argument("--config", "--cf", metavar="FILE",
                   help="YAML with a ddp_args mapping of these names")
    p.add_argument("-d", "--dataset", help="data set (digits, mnist, …); default digits")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir",
                   help="folder holding the data set (or its parent)")
    p.add_argument("--arch", help="model (lr, mlp, cnn, lenet…); default mlp")
    p.add_argument("-e", "--epoch", type=int, help="epochs; default 3 (as the simulator)")
    p.add_argument("-gb", "--global-batch-size", "--global_batch_size", dest="global_batch_size",
                   type=int, help="samples per step over all workers, a multiple of -w; default "
                   "512 (as the simulator)")
    p.add_argument("-w", "--workers", "--worker", dest="workers", type=int,
                   help="data-parallel workers = sub-batches; default 16 (the simulator's: 4)")
    p.add_argument("-f", "--faulty", type=int, nargs="*", metavar="ID",
                   help="faulty worker ids, e.g. -f 0 1 2")
    p.add_argument("--max-faulty", type=int, help="detector's bound on faulty workers "
                   "(default: the number of -f ids)")
    p.add_argument("--fault", help="update attack the faulty workers apply: trivial_noise "
                   "(default), sign_flip, alie (simulator only), gaussian, …")
    p.add_argument("--fault-sigma", type=float, help="the fault's sigma (noise std); default 1")
    p.add_argument("--fault-scale", type=float, help="the fault's scale, e.g. --fault sign_flip "
                   "--fault-scale 10 (y = -10 x: the strong fault of the docs' table)")
    p.add_argument("--fault-param", type=_key_value, action="append", metavar="KEY=VALUE",
                   help="another parameter of the fault (repeatable), e.g. z=1.5 for alie")
    p.add_argument("--check-every", type=int, help="a redundant check step every N steps "
                   "(extra compute 1/N; 0 disables); default 4")
    p.add_argument("--tolerance", type=float, help="relative distance under which replicas agree")
    p.add_argument("--correct", action=argparse.BooleanOptionalAction, default=None,
                   help="correct convicted workers' gradients instead of excluding them")
    p.add_argument("-df", "--defense", help="aggregator of the kept rows (mean, median, krum, "
                   "trimmed_mean, centered_clip, …); default mean")
    p.add_argument("--defense-param", type=_key_value, action="append", metavar="KEY=VALUE",
                   help="a parameter of the aggregator (repeatable), e.g. robust_threshold=4")
    p.add_argument("--proc", type=int, help="processes: 0 or 1 runs in this process (the "
                   "simulator's default is 1), N >= 2 spawns N gloo processes; default 0")
    p.add_argument("-tb", "--tb", metavar="DIR", help="TensorBoard/metrics.jsonl directory")
    p.add_argument("--device", help="cpu, cuda, cuda:N, gpu (= cuda), mps or auto; default cpu")
    p.add_argument("--data_coll_path", "--data-coll-path", dest="data_coll_path", metavar="DIR",
                   help="write the correction model's training pairs, one .npz shard per check "
                   "step, into DIR (implies --correct; docs/fault_tolerance.md)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--lr", type=float, help="learning rate; default 0.1")
    p.add_argument("--momentum", type=float, help="SGD momentum; default 0")
    p.add_argument("--seed", type=int, help="seed; default 0")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (0: every epoch)")
    p.add_argument("--checkpoint-every", type=int, help="with -tb: keep a checkpoint every N "
                   "steps and at the end (0: at the end only); default 100")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (its -tb "
                   "directory) from its last checkpoint, with its recorded settings; only -q, "
                   "--device, --proc, --max-steps, -e, --eval-every and --checkpoint-every may "
                   "change")
    p.add_argument("-q", "--quiet", action="store_true", default=None,
                   help="only the final summary, not the simulator's per-step lines")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="debug logs, including every step's worker → batch map")
    p.set_defaults(func=ddp_command)


FLAGS = (
    "dataset", "data_dir", "arch", "workers", "faulty", "max_faulty", "fault", "fault_sigma",
    "fault_scale", "check_every", "tolerance", "correct", "defense", "epoch", "max_steps",
    "global_batch_size", "lr", "momentum", "seed", "device", "proc", "eval_every", "tb",
    "data_coll_path", "quiet", "checkpoint_every",
)


def report(summary: dict[str, Any], check_every: int) -> None:
    """Print the end-of-run lines (accuracy last, so scripts can ``tail -1``)."""
    over = summary["overhead"]
    print(f"steps: {summary['steps']}  convicted (worker: step): {summary['convicted']}")
    if check_every:
        print(f"detection (check steps until conviction): {summary['detection_check_steps']}")
        print(f"redundancy: +{100 * over['extra']:.1f}% compute over plain data parallel "
              f"({100 * over['redundant_share']:.1f}% of all sub-batch gradients are replicas)")
    corr = summary.get("correction") or {}
    if corr:
        print(f"correction model (held-out check steps): mse {corr['mse']:.3g} "
              f"(uncorrected {corr['raw_mse']:.3g}, excluded {corr['exclude_mse']:.3g}), "
              f"mape {100 * corr['mape']:.1f}% (uncorrected {100 * corr['raw_mape']:.1f}%); "
              f"{summary['rows']['model']} rows corrected, {summary['correction_fallbacks']} of "
              "them by exclusion (the safeguard)"
              + (f", {summary['correction_clipped']} clipped to the step's largest trusted norm"
                 if summary.get("correction_clipped") else ""))
    if summary.get("nonfinite_steps"):
        print(f"skipped {summary['nonfinite_steps']} steps whose aggregate was not finite")
    if summary.get("f_lowered_steps"):
        print(f"defense {summary['defense']}: f lowered to the rule's largest valid value at "
              f"{summary['f_lowered_steps']} of {summary['steps']} steps (too few rows for "
              "f = faulty workers not yet convicted)")
    coll = summary.get("data_coll")
    if coll:
        print(f"data collection: {coll['pairs']} correction pairs in {coll['shards']} shards "
              f"under {coll['path']}")
    if summary.get("run_dir"):
        print(f"metrics and TensorBoard scalars: {summary['run_dir']}")
    acc = summary["final_test_accuracy"]
    print("final test accuracy: " + ("n/a" if acc is None else f"{100 * acc:.2f}%"))


def _flag_hint(message: str) -> str:
    """A missing data set's message with this command's flag instead of the YAML key."""
    from shieldwall.data.files import HINT

    return message.replace(HINT, "pass --data-dir with the folder holding the files or its "
                           "parent (e.g. --data-dir ../shared/datasets); the simulator's "
                           "default is ./data")


def ddp_command(args: argparse.Namespace) -> int:
    import torch

    from shieldwall.fault_tolerance.distributed import run_distributed, under_launcher
    from shieldwall.fault_tolerance.trainer import select_device

    overrides = {k: getattr(args, k) for k in FLAGS}
    if args.fault_param:
        overrides["fault_params"] = dict(args.fault_param)
    if args.defense_param:
        overrides["defense_params"] = dict(args.defense_param)
    if getattr(args, "debug", False):
        logging.getLogger().setLevel(logging.DEBUG)
    if args.resume:
        from shieldwall.fault_tolerance.resume import resume_config

        if args.config:
            raise ValueError("--resume RUN_DIR reads the run's own ddp_config.yaml; drop "
                             "--config (flags may change only what --resume allows)")
        if args.tb is not None:
            raise ValueError("--resume RUN_DIR is the run directory; drop -tb")
        cfg = resume_config(args.resume, overrides)
    else:
        cfg = load_ddp_config(args.config, overrides)
    device = select_device(cfg.device)  # a missing accelerator: one line, exit 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # shared machines
    distributed = cfg.proc > 1 or under_launcher()
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if not cfg.quiet and rank0:
        world = int(os.environ.get("WORLD_SIZE", cfg.proc)) if distributed else 1
        SeedConsole().start(cfg, str(device), world)
    if distributed:
        try:
            summary = run_distributed(cfg, echo=not cfg.quiet, resume=bool(args.resume))
        except ValueError as exc:  # a rank's one line (e.g. the data folder): name our flag
            raise ValueError(_flag_hint(str(exc))) from None
        if summary is None:  # a torchrun rank other than 0
            return 0
        print(f"processes: {summary['world_size']}  "
              f"max parameter divergence between ranks: {summary['max_param_divergence']:.3g}")
    else:
        from shieldwall.data import DataNotFoundError
        from shieldwall.fault_tolerance.trainer import build_setup, train_ddp

        try:
            setup = build_setup(cfg, device)
        except DataNotFoundError as exc:  # name this command's flag, not the YAML key
            raise DataNotFoundError(_flag_hint(str(exc))) from None
        console = None if cfg.quiet else SeedConsole()
        summary = train_ddp(cfg, setup=setup, console=console, resume=bool(args.resume))
    report(summary, cfg.check_every)
    return 0
