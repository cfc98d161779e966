"""``shieldwall evaluate --model-dir DIR``: score every model backup of a run (ByzShield's
``distributed_evaluator.py``), writing ``DIR/accuracy.csv`` and ``DIR/accuracy.png``.

``byzshield-eval`` is an alias. The flags are the evaluator's: ``--model-dir``, ``--eval-freq``,
``--cur-step``, ``--last-step``, ``--eval-batch-size``, ``--network``, ``--dataset`` (the last
two default to the run's, from ``backup.yaml``); ``--follow SECONDS`` keeps waiting for backups
of a run still in progress, as ByzShield's evaluator does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "evaluate_command"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", aliases=["byzshield-eval"],
                       help="score every model backup (model_step_<i>) of a run: CSV + PNG")
    p.add_argument("--model-dir", required=True, help="the run's train_dir (its backups)")
    p.add_argument("--eval-freq", type=int, default=None,
                   help="score steps cur-step + k·eval-freq only (default: every backup)")
    p.add_argument("--cur-step", type=int, default=0, help="first step is after this one")
    p.add_argument("--last-step", type=int, default=0, help="last step to score (0: all)")
    p.add_argument("--eval-batch-size", type=int, default=10000)
    p.add_argument("--network", default=None, help="model (default: the run's)")
    p.add_argument("--dataset", default=None, help="data set (default: the run's)")
    p.add_argument("--data-dir", default=None, help="data folder (default: the run's)")
    p.add_argument("--follow", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for each next backup of a running job")
    p.add_argument("-o", "--output", default=None,
                   help="CSV path (default: MODEL_DIR/accuracy.csv; the PNG beside it)")
    p.set_defaults(func=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> int:
    from shieldwall.redundancy.evaluator import evaluate_backups, write_curve

    scores = evaluate_backups(
        args.model_dir, eval_freq=args.eval_freq, cur_step=args.cur_step,
        last_step=args.last_step, dataset=args.dataset, model=args.network,
        data_dir=args.data_dir, eval_batch_size=args.eval_batch_size, follow=args.follow,
    )
    out = Path(args.output) if args.output else Path(args.model_dir) / "accuracy.csv"
    png = out.with_suffix(".png")
    write_curve(scores, out, png, title=str(Path(args.model_dir).resolve().parent.name))
    print("  step  test_loss   prec@1   prec@5")
    for s in scores:
        print(f"{s.step:6d} {s.test_loss:10.4f} {s.prec1:8.4f} {s.prec5:8.4f}")
    print(f"wrote {out} and {png}")
    return 0
