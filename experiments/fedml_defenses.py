"""Run a FedML config once per FedML defense name and attack mode; print an accuracy table.

Every ``defense_type`` of FedML's security vocabulary is run on the shared MNIST config
(``fedml_mpi_krum_mnist_lr.yaml``: FedAvg, 5 clients, 1 Byzantine, logistic regression, Dirichlet
split), under FedML's ``byzantine`` attack modes ``random`` and ``flip``, with the defense's keys
set as a FedML user writes them (``--set defense_args.KEY=VALUE``)::

    python experiments/fedml_defenses.py --data-dir ../shared/datasets --rounds 3

Results are appended to ``--results`` (JSON lines) as they finish, so an interrupted sweep resumes
where it stopped; the Markdown table is printed at the end (and written to ``--table``).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from shieldwall.algorithms.defense import build_defense
from shieldwall.config import load_config
from shieldwall.train import train

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE.parent.parent / "shared" / "configs" / "fedml_mpi_krum_mnist_lr.yaml"

#: FedML defense name → the keys a FedML user sets for it (5 clients, 1 Byzantine).
DEFENSES: dict[str, dict[str, Any]] = {
    "None": {},
    "krum": {},
    "multikrum": {"krum_param_m": 3},
    "trimmed_mean": {"beta": 0.2},
    "wise_median": {},
    "geo_median": {"batch_num": 3},
    "rfa": {},
    "slsgd": {"trim_param_b": 1, "alpha": 0.5, "option_type": 2},
    "cclip": {"tau": 1.0, "bucket_size": 2},
    "crfl": {"sigma": 0.01},
    "foolsgold": {},
    "norm_diff_clipping": {"norm_bound": 2.0},
    "robust_learning_rate": {"robust_threshold": 3},
    "weak_dp": {"stddev": 0.01},
    "3sigma": {},
    "3sigma_foolsgold": {},
    "3sigma_geo": {},
    "3sigma_krum": {},
    "anomaly_detection": {"cosine_similarity_bound": 0.3},
}

ATTACKS = ("random", "flip")


def overrides(data_dir: str, rounds: int, attack: str, defense: str, log_dir: str) -> list[str]:
    out = [
        f"data_args.data_cache_dir={data_dir}",
        f"train_args.comm_round={rounds}",
        "device_args.num_threads=1",
        f"attack_args.attack_mode={attack}",
        f"tracking_args.log_file_dir={log_dir}",
        f"tracking_args.run_name={defense}-{attack}",
        "tracking_args.enable_tensorboard=false",
        "tracking_args.progress_bar=false",
    ]
    if defense == "None":
        return out + ["defense_args.enable_defense=false"]
    out.append(f"defense_args.defense_type={defense}")
    return out + [f"defense_args.{k}={v}" for k, v in DEFENSES[defense].items()]


def run_one(config: Path, sets: list[str]) -> dict[str, Any]:
    cfg = load_config(config, sets)
    started = time.perf_counter()
    summary = train(cfg)
    return {
        "pipeline": build_defense(cfg).label if cfg.defense_args.enable_defense else "mean",
        "accuracy": summary["final_test_accuracy"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def table(results: dict[tuple[str, str], dict[str, Any]], attacks: tuple[str, ...]) -> str:
    head = "| FedML `defense_type` | shieldwall pipeline | " + " | ".join(
        f"acc. under `{a}`" for a in attacks) + " |"
    lines = [head, "|" + "---|" * (2 + len(attacks))]
    for defense in DEFENSES:
        cells = [results.get((defense, a)) for a in attacks]
        known = next((c for c in cells if c is not None), None)
        if known is None:
            continue
        accs = ["n/a" if c is None else f"{100 * c['accuracy']:.2f}%" for c in cells]
        lines.append(f"| `{defense}` | {known['pipeline']} | " + " | ".join(accs) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--data-dir", default=str(DEFAULT_CONFIG.parent.parent / "datasets"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    parser.add_argument("--defenses", nargs="+", default=list(DEFENSES), choices=list(DEFENSES))
    parser.add_argument("--results", type=Path, default=Path("fedml_defenses.jsonl"))
    parser.add_argument("--table", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    results: dict[tuple[str, str], dict[str, Any]] = {}
    if args.results.is_file():
        for line in args.results.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("rounds") == args.rounds:
                results[(rec["defense"], rec["attack"])] = rec
    with tempfile.TemporaryDirectory(prefix="fedml_defenses_") as log_dir:
        for defense in args.defenses:
            for attack in args.attacks:
                if (defense, attack) in results:
                    continue
                rec = run_one(args.config, overrides(args.data_dir, args.rounds, attack, defense,
                                                     log_dir))
                rec.update(defense=defense, attack=attack, rounds=args.rounds)
                results[(defense, attack)] = rec
                with args.results.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                print(f"{defense:>22} / {attack:<6} {100 * rec['accuracy']:6.2f}%  "
                      f"({rec['seconds']} s)", flush=True)
    text = table(results, tuple(args.attacks))
    print(text)
    if args.table is not None:
        args.table.write_text(text + "\n")


if __name__ == "__main__":
    main()
