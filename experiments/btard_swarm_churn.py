"""BTARD in an open swarm with churn: the seed's experiment at the size one machine allows.

``shieldwall swarm`` starts N ``shieldwall peer`` processes (K of them Byzantine) on 127.0.0.1
and keeps N alive as the BTARD seed's ``run_workers`` loop does with spot instances: a peer it
preempts (SIGKILL of the peer's whole process group, about every ``--preempt-every`` seconds,
Byzantine or honest alike) is replaced by a new identity that joins through a live peer and
downloads the agreed state. The Byzantine peers attack from ``--attack-start``.

Default: 16 peers of which 7 Byzantine, MNIST, softmax regression, batch 32, SGD 0.1, τ = 1, one
validator per step, sign flipping ×1000 from step 30 (the settings of the closed-cluster table
in docs/btard.md), 150 steps, a preemption about every 60 s, Ed25519 signatures.

Outputs (``--report`` redraws them from an existing ``--out``):

* ``docs/btard_swarm/churn.png``: honest training loss per step with the attack window, bans over
  time (Byzantine and honest identities), and the group size per step with the steps lost to
  churn marked;
* ``docs/btard_swarm/summary.md``: the numbers (peers started, preemptions, bans, false bans,
  steps lost to churn, final accuracy and agreement of the surviving honest peers).

    nice -n 5 python experiments/btard_swarm_churn.py             # about 20-30 min on 2 cores
    python experiments/btard_swarm_churn.py --report               # figures and table only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "btard_swarm"


def config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "common_args": {"random_seed": args.seed},
        "data_args": {"dataset": "mnist", "data_cache_dir": str(args.data_root),
                      "partition_method": "iid"},
        "model_args": {"model": "lr"},
        "device_args": {"num_threads": 1},
        "train_args": {"federated_optimizer": "BTARD", "client_num_in_total": args.peers,
                       "comm_round": args.steps, "batch_size": 32, "learning_rate": 0.1,
                       "checkpoint_frequency": 0},
        "validation_args": {"frequency_of_the_test": 10},
        "attack_args": {"enable_attack": True, "attack_type": "sign_flip", "scale": 1000,
                        "byzantine_client_num": args.byzantine,
                        "attack_start": args.attack_start},
        "btard_args": {"tau": 1.0, "validators": 1, "signature": "auto",
                       "save_steps": [args.steps // 2]},
        "tracking_args": {"enable_tensorboard": False, "progress_bar": False,
                          "log_file_dir": str(args.out), "run_name": "swarm"},
    }


def run(args: argparse.Namespace) -> None:
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: never overwriting a run (use --report)")
    args.out.mkdir(parents=True)
    cfg = args.out / "swarm.yaml"
    cfg.write_text(yaml.safe_dump(config(args)))
    cmd = [sys.executable, "-m", "shieldwall.cli", "swarm", str(cfg), "--peers", str(args.peers),
           "--byzantine", str(args.byzantine), "--preempt-every", str(args.preempt_every),
           "--phase-timeout", str(args.phase_timeout), "--step-interval",
           str(args.step_interval), "--seed", str(args.seed), "--out", str(args.out / "peers")]
    with (args.out / "launcher.log").open("w") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)


def _peers(out: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]], dict | None]]:
    """(identity, metrics records, summary or None) of every peer directory."""
    peers = []
    for d in sorted((out / "peers").glob("peer-*")):
        if not (d / "identity.json").exists():
            continue
        ident = json.loads((d / "identity.json").read_text())
        lines = (d / "metrics.jsonl").read_text().splitlines() if (
            d / "metrics.jsonl").exists() else []
        summary = json.loads((d / "summary.json").read_text()) if (
            d / "summary.json").exists() else None
        peers.append((ident, [json.loads(x) for x in lines if x.strip()], summary))
    return peers


def analyse(out: Path, attack_start: int) -> dict[str, Any]:
    peers = _peers(out)
    byz = {i["pid"] for i, _, _ in peers if i["byzantine"]}
    honest = {i["pid"] for i, _, _ in peers if not i["byzantine"]}
    steps: dict[int, dict[str, Any]] = {}
    for ident, records, _ in peers:
        if ident["byzantine"]:
            continue  # a Byzantine peer's log is not evidence
        for e in records:
            s = steps.setdefault(e["round"], {"round": e["round"], "losses": [], "group": 0,
                                              "present": 0, "silent": set(), "taken": [],
                                              "banned": set(), "acc": [], "time": []})
            if e.get("train_loss") is not None:
                s["losses"].append(e["train_loss"])
            s["group"] = max(s["group"], e["group"])
            s["present"] = max(s["present"], e["present"])
            s["silent"] |= set(e.get("silent", []))
            s["taken"].append(bool(e["step_taken"]))
            s["banned"] |= {b["peer"] for b in e.get("banned", [])}
            s["time"].append(e["round_time"])
            if e.get("test_accuracy") is not None:
                s["acc"].append(e["test_accuracy"])
    timeline, banned = [], set()
    for r in sorted(steps):
        s = steps[r]
        banned |= s["banned"]
        taken = sum(s["taken"]) * 2 > len(s["taken"])
        timeline.append({
            "round": r, "loss": statistics.fmean(s["losses"]) if s["losses"] else None,
            "group": s["group"], "present": s["present"], "silent": len(s["silent"]),
            "taken": taken, "byz_banned": len(banned & byz), "honest_banned": len(banned & honest),
            "acc": max(s["acc"]) if s["acc"] else None, "time": statistics.median(s["time"]),
        })
    finals = [(i, recs, summ) for i, recs, summ in peers if summ is not None and not i["byzantine"]]
    launcher = (out / "launcher.log").read_text() if (out / "launcher.log").exists() else ""
    lost = [t for t in timeline if t["silent"] and not t["taken"]]
    return {
        "timeline": timeline,
        "peers_started": len(peers),
        "byzantine_identities": len(byz),
        "honest_identities": len(honest),
        "preemptions": launcher.count("preempting"),
        "byzantine_banned": sorted(banned & byz),
        "byzantine_in_a_group": sorted(i["pid"] for i, recs, _ in peers
                                       if i["byzantine"] and recs),
        "byzantine_attacked": sorted(i["pid"] for i, recs, _ in peers if i["byzantine"]
                                     and any(e["round"] >= attack_start for e in recs)),
        "honest_banned": sorted(banned & honest),
        "steps": len(timeline),
        "steps_with_silent_members": sum(1 for t in timeline if t["silent"]),
        "steps_lost_to_churn": len(lost),
        "time_in_lost_steps": sum(t["time"] for t in lost),
        "steps_taken": sum(1 for t in timeline if t["taken"]),
        "attack_start": attack_start,
        "finished_honest": len(finals),
        "final_hashes": len({s["params_hash"] for _, _, s in finals}),
        "final_accuracy": next((t["acc"] for t in reversed(timeline) if t["acc"] is not None),
                               None),
        "median_step_time": statistics.median(t["time"] for t in timeline) if timeline else None,
    }


def report(out: Path, attack_start: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recorded = out / "swarm.yaml"  # the run's own attack_start wins over the flag's default
    if recorded.is_file():
        attack_start = yaml.safe_load(recorded.read_text())["attack_args"]["attack_start"]
    a = analyse(out, attack_start)
    tl = a["timeline"]
    DOCS.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 3.8))
    xs = [t["round"] for t in tl if t["loss"] is not None]
    ax1.plot(xs, [t["loss"] for t in tl if t["loss"] is not None], lw=1)
    ax1.axvspan(attack_start, tl[-1]["round"] if tl else attack_start, color="red", alpha=0.08,
                label="attack (sign flip ×1000)")
    ax1.set(xlabel="step", ylabel="training loss (honest peers)", yscale="log",
            title="loss around attack_start")
    ax1.legend()
    rounds = [t["round"] for t in tl]
    ax2.step(rounds, [t["byz_banned"] for t in tl], where="post", label="Byzantine identities")
    ax2.step(rounds, [t["honest_banned"] for t in tl], where="post", label="honest identities")
    ax2.axvline(attack_start, color="red", ls=":", lw=1)
    ax2.set(xlabel="step", ylabel="banned (cumulative)", title="bans over time")
    ax2.legend()
    ax3.step(rounds, [t["group"] for t in tl], where="mid", label="group (registered)")
    ax3.step(rounds, [t["present"] for t in tl], where="mid", label="present in the step")
    lost = [t["round"] for t in tl if t["silent"] and not t["taken"]]
    ax3.scatter(lost, [0.5] * len(lost), marker="x", color="black",
                label=f"step lost to churn ({len(lost)})")
    ax3.set(xlabel="step", ylabel="peers", title="membership and churn")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    png = DOCS / "churn.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    unbanned = len(set(a["byzantine_attacked"]) - set(a["byzantine_banned"]))
    rows = [
        ("peers started (identities)", f"{a['peers_started']} ({a['honest_identities']} honest, "
                                       f"{a['byzantine_identities']} Byzantine)"),
        ("preemptions (SIGKILL)", a["preemptions"]),
        ("steps logged / taken", f"{a['steps']} / {a['steps_taken']}"),
        ("Byzantine identities that took part / attacked (a step >= attack_start)",
         f"{len(a['byzantine_in_a_group'])} / {len(a['byzantine_attacked'])}"),
        ("Byzantine identities banned",
         f"{len(a['byzantine_banned'])} (the {unbanned} others that attacked were preempted "
         f"before a validator drew them)"),
        ("honest identities banned", len(a["honest_banned"])),
        ("steps with a silent (preempted) member", a["steps_with_silent_members"]),
        ("steps lost to churn (silent member, step not taken)",
         f"{a['steps_lost_to_churn']} ({a['time_in_lost_steps']:.0f} s)"),
        ("median step time", f"{a['median_step_time']:.2f} s" if a["median_step_time"] else "–"),
        ("honest peers that finished / distinct final parameters",
         f"{a['finished_honest']} / {a['final_hashes']}"),
        ("final test accuracy", f"{a['final_accuracy']:.4f}" if a["final_accuracy"] else "–"),
    ]
    text = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    (DOCS / "summary.md").write_text("\n".join(text) + "\n")
    (out / "analysis.json").write_text(json.dumps({k: v for k, v in a.items()
                                                   if k != "timeline"}, indent=1))
    print("\n".join(text))
    return png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peers", type=int, default=16)
    p.add_argument("--byzantine", type=int, default=7)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--attack-start", type=int, default=30)
    p.add_argument("--preempt-every", type=float, default=60.0,
                   help="mean seconds between preemptions (exponential; 0: none)")
    p.add_argument("--phase-timeout", type=float, default=10.0)
    p.add_argument("--step-interval", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "btard_swarm_churn")
    p.add_argument("--report", action="store_true", help="only redraw from --out")
    args = p.parse_args(argv)
    if not args.report:
        run(args)
    print(report(args.out, args.attack_start))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
