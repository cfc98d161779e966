"""Tiny ALBERT masked LM under attack: 16 workers of which 7 Byzantine, three defenses.

Trains ``model: albert`` (tiny shape) on the embedded Python help topics (or WikiText with
``--dataset wikitext2 --data-root DIR``) with PS-SGD and LAMB, for each attack of BTARD's Sec. 4
(sign flipping ×1000, label flipping, constant direction ×1000) plus ALIE, and without attack,
against three defenses: the plain mean, CenteredClip (PS-SGD, server-side) and BTARD-SGD (peers
aggregate with butterfly CenteredClip, validators ban). Writes the runs under ``--out``, and then

* ``docs/language_model_loss.png``: validation MLM loss over steps, one panel per defense;
* a Markdown table (printed, and saved as ``docs/language_model_table.md``): final validation
  loss and perplexity per attack × defense.

Usage::

    nice -n 10 python experiments/language_model.py --only none-mean alie-mean   # some runs
    nice -n 10 python experiments/language_model.py   # all 15 runs (hours on a loaded machine)
    python experiments/language_model.py --report                         # table + PNG from runs
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ATTACKS: dict[str, dict[str, Any]] = {
    "none": {},
    "sign_flip": {"attack_type": "sign_flip", "scale": 1000.0},
    "label_flip": {"attack_type": "label_flip"},
    "constant_direction": {"attack_type": "constant_direction", "scale": 1000.0},
    "alie": {"attack_type": "alie"},
}
DEFENSES = ("mean", "centered_clip", "btard")


def config(args: argparse.Namespace, attack: str, defense: str) -> dict[str, Any]:
    data: dict[str, Any] = {"dataset": args.dataset, "partition_method": "iid"}
    if args.data_root:
        data["data_cache_dir"] = args.data_root
    raw: dict[str, Any] = {
        "common_args": {"random_seed": args.seed},
        "data_args": data,
        "text_args": {"vocab_size": args.vocab, "max_seq_length": args.seq_len},
        "model_args": {"model": "albert"},
        "device_args": {"num_threads": 1},
        "train_args": {
            "federated_optimizer": "BTARD" if defense == "btard" else "PS-SGD",
            "client_num_in_total": args.workers, "comm_round": args.steps,
            "batch_size": args.batch_size, "client_optimizer": "lamb", "learning_rate": args.lr,
            "warmup_steps": args.warmup, "lr_schedule": "linear", "max_grad_norm": 1.0,
            "checkpoint_frequency": 0,
        },
        "validation_args": {"frequency_of_the_test": args.eval_every},
        "tracking_args": {"log_file_dir": str(args.out), "run_name": f"{attack}-{defense}",
                          "enable_tensorboard": False, "progress_bar": False},
    }
    if defense == "centered_clip":
        raw["defense_args"] = {"enable_defense": True, "defense_type": "centered_clip",
                               "byzantine_client_num": args.byzantine, "tau": args.tau}
    if defense == "btard":
        raw["btard_args"] = {"tau": args.tau, "validators": 1, "signature": "hmac"}
    if attack != "none":
        raw["attack_args"] = {"enable_attack": True, "byzantine_client_num": args.byzantine,
                              "attack_start": args.attack_start, **ATTACKS[attack]}
    return raw


def run_one(args: argparse.Namespace, attack: str, defense: str) -> dict[str, Any]:
    from shieldwall.config import config_from_dict
    from shieldwall.train import train

    raw = config(args, attack, defense)
    tic = time.perf_counter()
    summary = train(config_from_dict(raw, name=f"lm-{attack}-{defense}"))
    return {"attack": attack, "defense": defense, "seconds": time.perf_counter() - tic,
            "summary": {k: v for k, v in summary.items() if not isinstance(v, dict)}}


def curves(out: Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    from shieldwall.metrics import read_metrics

    found = {}
    for attack in ATTACKS:
        for defense in DEFENSES:
            records = read_metrics(out / f"{attack}-{defense}")
            pts = [(r["round"], r["test_loss"]) for r in records
                   if r.get("test_loss") is not None]
            if pts:
                found[(attack, defense)] = pts
    return found


def bans(out: Path, attack: str) -> str:
    """BTARD: how many Byzantine peers were banned, and by which step (honest bans too)."""
    from shieldwall.metrics import read_metrics

    events = [b for r in read_metrics(out / f"{attack}-btard") for b in r.get("banned", [])]
    byz = [b["round"] for b in events if b["byzantine"]]
    honest = sum(1 for b in events if not b["byzantine"])
    text = f"; {len(byz)} banned" + (f" by step {max(byz) + 1}" if byz else "")
    return text + (f", {honest} honest banned" if honest else "")


def report(args: argparse.Namespace) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(args.out)
    docs = REPO / "docs"
    fig, axes = plt.subplots(1, len(DEFENSES), figsize=(15, 4), sharey=True)
    for ax, defense in zip(axes, DEFENSES):
        for attack in ATTACKS:
            pts = data.get((attack, defense))
            if pts:
                ax.plot(*zip(*pts), label=attack, linestyle="-" if attack != "none" else "--",
                        color="black" if attack == "none" else None)
        ax.set(title=defense, xlabel="step", ylabel="validation MLM loss (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"tiny ALBERT, {args.workers} workers of which {args.byzantine} Byzantine")
    fig.tight_layout()
    fig.savefig(docs / "language_model_loss.png", dpi=110)
    plt.close(fig)
    last = max((pts[-1][0] + 1 for pts in data.values()), default=0)
    lines = [f"Validation MLM loss after step {last} (perplexity):", "",
             "| attack | " + " | ".join(DEFENSES) + " |", "|---" * (len(DEFENSES) + 1) + "|"]
    for attack in ATTACKS:
        cells = []
        for defense in DEFENSES:
            pts = data.get((attack, defense))
            if not pts:
                cells.append("—")
                continue
            loss = pts[-1][1]
            ppl = math.exp(min(loss, 50))
            note = bans(args.out, attack) if defense == "btard" and attack != "none" else ""
            cells.append(f"{loss:.2f} (ppl {ppl:.0f}{note})")
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (docs / "language_model_table.md").write_text(
        "# Language model: final validation loss per attack and defense\n\n" + table + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="pydoc_topics")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "language_model")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--byzantine", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--attack-start", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", help="ATTACK-DEFENSE names to run (default: all)")
    p.add_argument("--report", action="store_true", help="only draw the table and PNG")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for attack in ATTACKS:
            for defense in DEFENSES:
                name = f"{attack}-{defense}"
                if args.only and name not in args.only:
                    continue
                if (args.out / name / "summary.json").exists():
                    continue  # never overwrite a finished run
                result = run_one(args, attack, defense)
                with open(args.out / "results.jsonl", "a") as handle:
                    handle.write(json.dumps(result) + "\n")
                print(f"{name}: {result['seconds']:.0f} s, final validation loss "
                      f"{result['summary'].get('final_test_loss')}", flush=True)
                report(args)
    print(report(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
