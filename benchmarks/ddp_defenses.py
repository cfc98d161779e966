"""Every robust aggregator as ``shieldwall ddp --defense`` at 16 workers, 5 faulty, strong fault.

For each rule: the rule alone (no redundancy, ``--check-every 0``), detection + exclusion, and
detection + ``--correct``; plus the fault-free and plain-mean baselines. One line of JSON per run
is appended to ``--out`` as it finishes (a re-run skips the rows already there), and
``--table`` prints the Markdown table from that file.

    nice -n 10 python benchmarks/ddp_defenses.py --data-dir ../shared/datasets \\
        --out docs/benchmarks/ddp_defenses.jsonl
    python benchmarks/ddp_defenses.py --out docs/benchmarks/ddp_defenses.jsonl --table
    # the mean with faster checks (docs: convicted at step 4 / 8 instead of 16)
    python benchmarks/ddp_defenses.py --rules mean --check-every 1 --out ddp_mean_ce1.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from shieldwall.aggregators import AGGREGATORS
from shieldwall.fault_tolerance import DDPConfig
from shieldwall.fault_tolerance.trainer import train_ddp

# Parameters the rules need at 16 workers (their own defaults otherwise).
RULE_PARAMS = {"robust_learning_rate": {"robust_threshold": 4}, "slsgd": {"trim_param_b": 4}}
MODES = {"alone": dict(check_every=0), "exclude": dict(correct=False),
         "correct": dict(correct=True)}


def rules() -> list[str]:
    return [e.name for e in AGGREGATORS if e.name != "mean"]


def run(base: dict, name: str, rule: str, mode: dict, out: Path) -> None:
    cfg = DDPConfig(**base, defense=rule, defense_params=RULE_PARAMS.get(rule, {}), **mode)
    t0 = time.perf_counter()
    s = train_ddp(cfg)
    row = {"name": name, "defense": rule, **mode, "faulty": cfg.faulty,
           "accuracy": s["final_test_accuracy"], "test_loss": s["final_test_loss"],
           "convicted": s["convicted"], "f_lowered_steps": s["f_lowered_steps"],
           "steps": s["steps"], "wall_s": round(time.perf_counter() - t0, 1)}
    with out.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def table(out: Path) -> str:
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    by = {(r["defense"], r["name"].split(":")[0]): r for r in rows}

    def acc(rule: str, mode: str) -> str:
        r = by.get((rule, mode))
        return "—" if r is None or r["accuracy"] is None else f"{100 * r['accuracy']:.2f}"

    lines = ["| defense | rule alone (no redundancy) | detect + exclude | detect + `--correct` "
             "| steps with f lowered (exclude / correct) |", "|---|---|---|---|---|"]
    for rule in ["mean", *rules()]:
        lowered = "/".join(str(by[(rule, m)]["f_lowered_steps"]) if (rule, m) in by else "—"
                           for m in ("exclude", "correct"))
        lines.append(f"| {rule} | {acc(rule, 'alone')} | {acc(rule, 'exclude')} | "
                     f"{acc(rule, 'correct')} | {lowered} |")
    free = by.get(("mean", "fault_free"))
    if free:
        lines.append(f"\nfault-free mean: {100 * free['accuracy']:.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/datasets")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--epoch", type=int, default=1)
    ap.add_argument("--global-batch-size", type=int, default=512)
    ap.add_argument("--max-steps", type=int, default=None, help="stop each run after N steps")
    ap.add_argument("--check-every", type=int, default=4,
                    help="check period of the exclude/correct runs (use another --out)")
    ap.add_argument("--fault", default="sign_flip")
    ap.add_argument("--fault-scale", type=float, default=10.0)
    ap.add_argument("--rules", nargs="*", help="only these rules (default: every registered one)")
    ap.add_argument("--out", default="docs/benchmarks/ddp_defenses.jsonl")
    ap.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(out))
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    done = set()
    if out.exists():
        done = {(r["defense"], r["name"]) for r in map(json.loads, out.read_text().splitlines())}
    base = dict(dataset=args.dataset, data_dir=args.data_dir, arch=args.arch, workers=16,
                epoch=args.epoch, global_batch_size=args.global_batch_size, quiet=True,
                max_steps=args.max_steps)
    faulty = dict(faulty=[0, 1, 2, 3, 4], fault=args.fault, fault_scale=args.fault_scale)
    chosen = args.rules or ["mean", *rules()]
    todo = [("fault_free", "mean", dict(check_every=0), {})] if "mean" in chosen else []
    for rule in chosen:
        todo += [(mode, rule, kw if mode == "alone" else {**kw, "check_every": args.check_every},
                  faulty) for mode, kw in MODES.items()]
    for name, rule, mode, extra in todo:
        if (rule, name) in done:
            continue
        run({**base, **extra}, name, rule, mode, out)


if __name__ == "__main__":
    main()
