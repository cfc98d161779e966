"""BTARD-SGD under attack: 16 peers, 7 Byzantine, on MNIST (or the embedded digits).

For each attack (sign flipping ×1000, label flipping, random direction, constant direction — the
attacks of the paper's Sec. 4, with the authors' scales) and each seed, runs BTARD-SGD with real
validators, starting the attack at ``--attack-start``, and records when each Byzantine peer is
banned; a no-attack run per seed gives the reference curve. Writes

* ``docs/btard_loss.png`` — honest peers' training loss and test accuracy over steps (mean over
  seeds) for each attack and without attack, and (dashed) for ``--no-bans`` attacks run without
  validators, i.e. with CenteredClip alone and nobody ever banned;
* ``docs/btard_bans.png`` — Byzantine peers banned over time (the runs above, and the study);
* ``docs/btard_ban_times.png`` — from a separate, cheaper study (``--study-seeds`` runs of sign
  flipping from step 0 on ``--study-dataset``, stopped once all are banned; ban times depend
  only on the validator draws), the distribution of the steps until each Byzantine peer is
  banned and until all are, with real validators and with ``check_mode: simulated``;

and prints a Markdown table (ban times, false bans, final accuracy, loss gap to the no-attack
run) for ``docs/btard.md``. Usage::

    python experiments/btard_attacks.py --seeds 3 --steps 200     # about 40 min on 1 busy core
    python experiments/btard_attacks.py --dataset digits --model lr --steps 100 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ATTACKS: dict[str, dict[str, Any]] = {
    "none": {},
    "sign_flip": {"attack_type": "sign_flip", "scale": 1000.0},
    "label_flip": {"attack_type": "label_flip"},
    "random_direction": {"attack_type": "random_direction", "scale": 1000.0},
    "constant_direction": {"attack_type": "constant_direction", "scale": 1000.0},
}


def config(args: argparse.Namespace, attack: str, seed: int, variant: str, out: Path) -> dict:
    data = {"dataset": args.dataset, "partition_method": "iid"}
    if args.dataset != "digits":
        data["data_cache_dir"] = args.data_root
    raw: dict[str, Any] = {
        "common_args": {"random_seed": seed},
        "data_args": data,
        "model_args": {"model": args.model},
        "device_args": {"num_threads": 1},
        "train_args": {"federated_optimizer": "BTARD", "client_num_in_total": args.peers,
                       "comm_round": args.steps, "batch_size": args.batch_size,
                       "learning_rate": args.lr, "checkpoint_frequency": 0},
        "validation_args": {"frequency_of_the_test": args.eval_every},
        "tracking_args": {"log_file_dir": str(out), "run_name": f"{attack}-{variant}-{seed}",
                          "enable_tensorboard": False, "progress_bar": False},
        "btard_args": {"tau": args.tau,
                       "validators": 0 if variant == "nobans" else args.validators,
                       "signature": args.signature,
                       "check_mode": "simulated" if variant == "simulated" else "real"},
    }
    if attack != "none":
        raw["attack_args"] = {"enable_attack": True, "byzantine_client_num": args.byzantine,
                              "attack_start": args.attack_start, **ATTACKS[attack]}
    return raw


def run_one(job: tuple[argparse.Namespace, str, int, str, str]) -> dict[str, Any]:
    args, attack, seed, variant, out = job
    import torch

    torch.set_num_threads(1)
    from shieldwall.btard.run import run_btard
    from shieldwall.config import config_from_dict
    from shieldwall.metrics import read_metrics

    raw = config(args, attack, seed, variant, Path(out))
    tic = time.perf_counter()
    summary = run_btard(config_from_dict(raw, name=f"btard-{attack}"))
    records = read_metrics(summary["run_dir"])
    return {"attack": attack, "seed": seed, "variant": variant, "summary": summary,
            "records": records, "seconds": time.perf_counter() - tic}


def ban_study_one(job: tuple[argparse.Namespace, int, str]) -> dict[str, Any]:
    """Run sign flipping from step 0 until every Byzantine peer is banned (or ``--study-cap``
    steps); only the ban times are kept. They depend on the validator draws, not on the task."""
    args, seed, mode = job
    import torch

    torch.set_num_threads(1)
    from shieldwall.btard.run import build
    from shieldwall.config import config_from_dict

    raw = config(args, "sign_flip", seed, mode, Path(tempfile.gettempdir()))
    raw["data_args"] = {"dataset": args.study_dataset, "partition_method": "iid"}
    raw["model_args"] = {"model": "lr"}
    raw["attack_args"]["attack_start"] = 0
    run = build(config_from_dict(raw))
    byz = set(run.byzantine)
    for r in range(args.study_cap):
        run.step(r)
        if byz <= set(run.ledger.banned):
            break
    bans = {p: b.round for p, b in run.ledger.banned.items()}
    return {"seed": seed, "mode": mode, "each": sorted(bans[p] for p in byz if p in bans),
            "complete": byz <= set(bans), "false": sorted(set(bans) - byz)}


def series(records: list[dict], key: str, steps: int) -> np.ndarray:
    out = np.full(steps, np.nan)
    for r in records:
        if r.get(key) is not None:
            out[r["round"]] = r[key]
    return out


def smooth(x: np.ndarray, k: int = 9) -> np.ndarray:
    ok = ~np.isnan(x)
    xs = np.where(ok, x, 0.0)
    w = np.ones(k)
    return np.convolve(xs, w, "same") / np.maximum(np.convolve(ok.astype(float), w, "same"), 1)


def ban_steps(result: dict[str, Any], start: int) -> list[int]:
    byz = set(result["summary"]["byzantine"])
    return sorted(r - start for p, r in result["summary"]["banned"].items() if int(p) in byz)


def banned_curve(times: list[int], steps: int) -> np.ndarray:
    """Number banned after each step, from the steps at which they were banned."""
    out = np.zeros(steps)
    for t in times:
        out[t:] += 1
    return out


def plots(results: list[dict], study: list[dict], args: argparse.Namespace, docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, start = args.steps, args.attack_start
    names = [a for a in ATTACKS if any(r["attack"] == a for r in results)]
    colors = dict(zip(ATTACKS, ["black", "tab:red", "tab:blue", "tab:green", "tab:purple"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for a in names:
        runs = [r for r in results if r["attack"] == a and r["variant"] == "real"]
        loss = np.nanmean([series(r["records"], "train_loss", steps) for r in runs], axis=0)
        acc = np.nanmean([series(r["records"], "test_accuracy", steps) for r in runs], axis=0)
        label = "no attack" if a == "none" else a.replace("_", " ")
        ax1.plot(smooth(loss), color=colors[a], label=label, lw=1.2)
        idx = ~np.isnan(acc)
        ax2.plot(np.arange(steps)[idx], acc[idx], color=colors[a], label=label, marker=".")
        nobans = [r for r in results if r["attack"] == a and r["variant"] == "nobans"]
        if nobans:
            loss = np.nanmean([series(r["records"], "train_loss", steps) for r in nobans], 0)
            acc = np.nanmean([series(r["records"], "test_accuracy", steps) for r in nobans], 0)
            idx = ~np.isnan(acc)
            ax1.plot(smooth(loss), color=colors[a], ls="--", lw=1)
            ax2.plot(np.arange(steps)[idx], acc[idx], color=colors[a], ls="--",
                     label=f"{label}, no validators (never banned)")
    for ax in (ax1, ax2):
        ax.axvline(start, color="grey", ls=":", lw=1)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("honest peers' training loss (smoothed)")
    ax1.set_yscale("log")
    ax2.set_ylabel("test accuracy")
    handles, labels = ax2.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"BTARD-SGD, {args.peers} peers, {args.byzantine} Byzantine from step {start} "
                 f"({args.dataset}, {args.model}; mean of {args.seeds} seeds)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(docs / "btard_loss.png", dpi=110)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for a in names:
        if a == "none":
            continue
        for r in (r for r in results if r["attack"] == a and r["variant"] == "real"):
            ax1.step(np.arange(steps), banned_curve(ban_steps(r, 0), steps), where="post",
                     color=colors[a], alpha=0.6, lw=1.5,
                     label=a.replace("_", " ") if r["seed"] == 0 else None)
    ax1.axvline(start, color="grey", ls=":", lw=1)
    ax1.set_title("runs of btard_loss.png (per seed; the same for every attack)")
    cap = max([t for s in study for t in s["each"]] + [10]) + 5
    for mode, color in (("real", "tab:blue"), ("simulated", "tab:orange")):
        curves = [banned_curve(s["each"], cap) for s in study if s["mode"] == mode]
        for c in curves:
            ax2.step(np.arange(cap), c, where="post", color=color, alpha=0.12, lw=1)
        if curves:
            ax2.step(np.arange(cap), np.median(curves, axis=0), where="post", color=color,
                     lw=2.5, label=f"{mode} checks: median of {len(curves)} seeds")
    ax2.set_title("ban-time study: sign flipping from step 0")
    for ax in (ax1, ax2):
        ax.set_xlabel("step")
        ax.set_ylabel("Byzantine peers banned")
        ax.set_ylim(0, args.byzantine + 0.5)
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Byzantine peers banned over time ({args.peers} peers, {args.byzantine} "
                 f"Byzantine, {args.validators} validator(s) per step)")
    fig.tight_layout()
    fig.savefig(docs / "btard_bans.png", dpi=110)
    plt.close(fig)

    if not study:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, mode in zip(axes, ("real", "simulated")):
        runs = [s for s in study if s["mode"] == mode]
        each = [t for s in runs for t in s["each"]]
        last = [max(s["each"]) for s in runs if s["complete"]]
        if not runs:
            continue
        bins = np.arange(0, max(each + [1]) + 6, 5)
        ax.hist(each, bins=bins, alpha=0.6, label="each Byzantine peer")
        ax.hist(last, bins=bins, alpha=0.6, label="the last one (all banned)")
        ax.set_xlabel("steps after the attack starts")
        ax.set_title(f"{mode} checks: {len(runs)} seeds, median all-banned "
                     f"{np.median(last):.0f}, max {max(last)}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("count")
    axes[0].legend()
    fig.suptitle(f"Time to ban: {args.peers} peers, {args.byzantine} Byzantine, "
                 f"{args.validators} validator(s) per step")
    fig.tight_layout()
    fig.savefig(docs / "btard_ban_times.png", dpi=110)
    plt.close(fig)


def table(results: list[dict], args: argparse.Namespace) -> str:
    steps, start = args.steps, args.attack_start
    base = [r for r in results if r["attack"] == "none"]
    base_loss = np.nanmean([series(r["records"], "train_loss", steps) for r in base], axis=0)
    lines = ["| attack | mode | seeds | steps to ban each (median, max) | steps to ban all "
             "(per seed) | false bans | final test acc. | train-loss gap, last 50 steps |",
             "|---|---|---|---|---|---|---|---|"]
    for a in ATTACKS:
        for variant in ("real", "simulated", "nobans"):
            runs = [r for r in results if r["attack"] == a and r["variant"] == variant]
            if not runs:
                continue
            each = [s for r in runs for s in ban_steps(r, start)]
            alls = [max(ban_steps(r, start)) if len(ban_steps(r, start)) == args.byzantine
                    else "not all" for r in runs] if a != "none" else ["–"]
            false = sum(len(r["summary"]["honest_banned"]) for r in runs)
            acc = np.mean([r["summary"]["final_test_accuracy"] for r in runs])
            loss = np.nanmean([series(r["records"], "train_loss", steps) for r in runs], axis=0)
            gap = float(np.nanmean(loss[-50:]) - np.nanmean(base_loss[-50:])) if base else np.nan
            each_txt = f"{int(np.median(each))}, {max(each)}" if each else "–"
            lines.append(f"| {a} | {variant} | {len(runs)} | {each_txt} | "
                         f"{', '.join(map(str, alls))} | {false} | {acc:.4f} | {gap:+.4f} |")
    return "\n".join(lines)


def study_table(study: list[dict]) -> str:
    lines = ["| checks | seeds | all banned | false bans | steps to ban each: median / 90% / "
             "max | steps to ban all: median / 90% / max |", "|---|---|---|---|---|---|"]
    for mode in ("real", "simulated"):
        runs = [s for s in study if s["mode"] == mode]
        if not runs:
            continue
        each = [t for s in runs for t in s["each"]]
        last = [max(s["each"]) for s in runs if s["complete"]]

        def q(x: list[int]) -> str:
            return f"{np.median(x):.0f} / {np.quantile(x, 0.9):.0f} / {max(x)}" if x else "–"

        lines.append(f"| {mode} | {len(runs)} | {sum(s['complete'] for s in runs)} | "
                     f"{sum(len(s['false']) for s in runs)} | {q(each)} | {q(last)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="BTARD-SGD under attack: plots and a table.")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "datasets"))
    p.add_argument("--model", default="lr")
    p.add_argument("--peers", type=int, default=16)
    p.add_argument("--byzantine", type=int, default=7)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--attack-start", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--validators", type=int, default=1)
    p.add_argument("--signature", default="auto")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--attacks", default=",".join(ATTACKS))
    p.add_argument("--simulated", default="sign_flip",
                   help="attacks also run with check_mode: simulated (comma list, or empty)")
    p.add_argument("--no-bans", default="sign_flip,constant_direction",
                   help="attacks also run without validators, for comparison (comma list)")
    p.add_argument("--study-seeds", type=int, default=30,
                   help="seeds of the ban-time study (sign flipping, real and simulated checks)")
    p.add_argument("--study-dataset", default="digits")
    p.add_argument("--study-cap", type=int, default=400)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (1 thread each)")
    p.add_argument("--docs", default=str(REPO / "docs"))
    p.add_argument("--save", help="also write all results as JSON here")
    p.add_argument("--from-json", help="redo the plots and tables from a --save file")
    args = p.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        for r in saved["runs"]:
            r["summary"]["banned"] = {int(k): v for k, v in r["summary"]["banned"].items()}
        plots(saved["runs"], saved["study"], args, Path(args.docs))
        print(table(saved["runs"], args) + "\n\n" + study_table(saved["study"]))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = tempfile.mkdtemp(prefix="btard_attacks_")
    jobs = [(args, a, s, "real", out) for a in args.attacks.split(",") if a
            for s in range(args.seeds)]
    jobs += [(args, a, s, "simulated", out) for a in args.simulated.split(",") if a
             for s in range(args.seeds)]
    jobs += [(args, a, s, "nobans", out) for a in args.no_bans.split(",") if a
             for s in range(args.seeds)]
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for res in pool.map(run_one, jobs):
            s = res["summary"]
            print(f"{res['attack']:>18} {res['variant']:>9} seed {res['seed']}: banned "
                  f"{s['banned']} false {s['honest_banned']} acc {s['final_test_accuracy']:.4f} "
                  f"({res['seconds']:.0f} s)", file=sys.stderr, flush=True)
            results.append(res)
    study = []
    with ProcessPoolExecutor(args.jobs) as pool:
        jobs2 = [(args, 1000 + s, m) for m in ("real", "simulated")
                 for s in range(args.study_seeds)]
        for res in pool.map(ban_study_one, jobs2):
            print(f"ban study {res['mode']:>9} seed {res['seed']}: {res['each']} "
                  f"false {res['false']}", file=sys.stderr, flush=True)
            study.append(res)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    plots(results, study, args, docs)
    if args.save:
        Path(args.save).write_text(json.dumps({"runs": results, "study": study}))
    print(table(results, args))
    print()
    print(study_table(study))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
