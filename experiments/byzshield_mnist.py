"""ByzShield's MNIST comparison on real processes: MOLS vs Ramanujan vs DETOX vs baseline.

Every run is ``shieldwall byzshield …`` with ByzShield's flags: a parameter server and K = 15
worker processes on 127.0.0.1 (n = 16), LeNet on MNIST, coordinate median over the voted files,
q worst-case adversaries (``--byzantine-gen hard_coded``; for DETOX ``draco_lite_attack`` with
``--detox-attack worst``), under ALIE (``--lis-simulation simulate``, z = 1 as ByzShield) and the
reversed gradient (``--err-mode rev_grad``, −100·g). Each worker computes 250 samples per step in
every scheme: MOLS/Ramanujan split ``--batch-size 1250`` into 25 files of 50 (5 per worker),
DETOX and the baseline take ``--batch-size 250`` per file (DETOX: 5 groups, 1250 distinct samples
a step; baseline: 3750). The model is backed up every ``--eval-freq``
steps and ``shieldwall evaluate`` scores every backup; the curves go to CSV and PNG.

    nice -n 10 python experiments/byzshield_mnist.py --data-dir ../shared/datasets \\
        --out docs/redundancy --steps 150 --qs 3
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

SCHEMES = [  # label, approach, --batch-size, extra flags
    ("baseline", "baseline", 250, []),
    ("DETOX", "draco_lite_attack", 250, ["--detox-attack=worst"]),
    ("ByzShield MOLS", "mols", 1250, []),
    ("ByzShield Ramanujan-1", "rama_one", 1250, []),
]
ATTACKS = {"alie": ["--lis-simulation=simulate"], "rev_grad": ["--err-mode=rev_grad"]}


def run_one(args: argparse.Namespace, work: Path, approach: str, batch: int, extra: list[str],
            attack: str, q: int) -> tuple[Path, dict]:
    from shieldwall.cli import main
    from shieldwall.metrics.logger import read_metrics

    name = f"{approach}-{attack}-q{q}"
    argv = [
        "byzshield", f"--approach={approach}", "--group-size=3", f"--worker-fail={q}",
        "--byzantine-gen=hard_coded", "--mode=coord-median", f"--batch-size={batch}",
        f"--lr={args.lr}", "--momentum=0.9", f"--gamma={args.gamma}", f"--lr-step={args.lr_step}",
        "--network=LeNet", "--dataset=MNIST", f"--data-dir={args.data_dir}", "--epochs=100",
        f"--max-steps={args.steps}", f"--eval-freq={args.eval_freq}", f"--seed={args.seed}",
        f"--log-dir={work}", f"--run-name={name}", *ATTACKS[attack], *extra,
    ]
    argv.append("--n=16")
    if args.simulate:
        argv.append("--simulate")
    started = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(f"{name}: shieldwall byzshield exited {code}")
    run_dir = work / name
    recs = read_metrics(run_dir)
    info = {"seconds": time.perf_counter() - started, "distorted": recs[-1]["distorted_files"],
            "files": recs[-1]["num_files"], "diverged": any("diverged_at" in r for r in recs)}
    if main(["evaluate", f"--model-dir={run_dir / 'backups'}"]) != 0:
        raise SystemExit(f"{name}: evaluation failed")
    return run_dir, info


def plot(out: Path, attack: str, q: int, curves: dict[str, list[tuple[int, float]]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in curves.items():
        ax.plot([s for s, _ in pts], [a for _, a in pts], marker=".", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("top-1 test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"MNIST LeNet, K=15, r=3, q={q} worst-case, {attack}")
    fig.tight_layout()
    path = out / f"byzshield_mnist_{attack}_q{q}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--out", default="docs/redundancy")
    parser.add_argument("--work", default=None, help="run folders (default: OUT/runs, removed)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-freq", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--gamma", type=float, default=0.96)
    parser.add_argument("--lr-step", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--qs", type=int, nargs="+", default=[3])
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    parser.add_argument("--schemes", nargs="+", default=[a for _, a, _, _ in SCHEMES])
    parser.add_argument("--simulate", action="store_true", help="in-process (simulator)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / "runs"
    if work.exists() and not args.work:
        shutil.rmtree(work)
    rows_path = out / "byzshield_mnist.csv"
    with rows_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["attack", "q", "scheme", "approach", "files", "distorted_files", "step",
                    "test_loss", "prec1", "prec5", "diverged", "run_seconds"])
        for attack in args.attacks:
            for q in args.qs:
                curves: dict[str, list[tuple[int, float]]] = {}
                for label, approach, batch, extra in SCHEMES:
                    if approach not in args.schemes:
                        continue
                    from shieldwall.redundancy.evaluator import read_curve

                    run_dir, info = run_one(args, work, approach, batch, extra, attack, q)
                    scores = read_curve(run_dir / "backups" / "accuracy.csv")
                    curves[label] = [(s.step, s.prec1) for s in scores]
                    for s in scores:
                        w.writerow([attack, q, label, approach, info["files"], info["distorted"],
                                    s.step, f"{s.test_loss:.5g}", f"{s.prec1:.4f}",
                                    f"{s.prec5:.4f}", int(info["diverged"]),
                                    f"{info['seconds']:.0f}"])
                    fh.flush()
                    print(f"{attack:8s} q={q} {label:22s} distorted {info['distorted']}/"
                          f"{info['files']}  final prec@1 {scores[-1].prec1:.4f}  "
                          f"{info['seconds']:.0f} s", flush=True)
                print(f"wrote {plot(out, attack, q, curves)}", flush=True)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {rows_path}")


if __name__ == "__main__":
    main()
