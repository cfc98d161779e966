"""ByzShield's vocabulary and schedule: command line, attacks on DETOX, epochs, lr decay,
backups and the evaluator, divergence (in-process; the multi-process runs are in
test_redundancy_cluster.py)."""

from __future__ import annotations

import argparse
import csv
import json
import logging
from itertools import chain

import pytest
import torch
import yaml

from shieldwall.cli import build_parser, main
from shieldwall.commands.byzshield import build_config
from shieldwall.redundancy.analysis import distorted_files
from shieldwall.redundancy.cluster import step_indices
from shieldwall.redundancy.detox import detox, detox_adversaries
from shieldwall.redundancy.schedule import epoch_indices, lr_at, steps_per_epoch, total_steps
from shieldwall.redundancy.training import draw_files

torch.set_num_threads(1)


def byz_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["byzshield", *argv])


# ---------------------------------------------------------------- ByzShield's attacks on DETOX
def _byzshield_attack_detox(mode: str, q: int, k: int, r: int) -> list[int]:
    """ByzShield's util._attack_detox (ranks 1..K), transcribed, minus one for worker ids."""
    if mode == "worst":
        rp = (r + 1) // 2
        s = list(chain.from_iterable([list(range(i, i + rp)) for i in range(1, (q // rp) * r, r)]))
        if q % rp:
            s.extend(range((q // rp) * r + 1, (q // rp) * r + 1 + q % rp))
    elif mode == "benign":
        s = [x for start in range(1, r + 1) for x in range(start, k + 1, r)][:q]
    else:
        s = list(range(1, q + 1))
    return sorted(x - 1 for x in s)


@pytest.mark.parametrize("mode", ["worst", "benign", "whole_group"])
@pytest.mark.parametrize(("k", "r"), [(15, 3), (25, 5), (21, 3)])
def test_detox_attacks_equal_byzshield(mode, k, r):
    for q in range(0, k // 2 + 1):
        assert detox_adversaries(mode, q, k, r) == _byzshield_attack_detox(mode, q, k, r), q


def test_detox_attacks_distort_as_expected():
    p = detox(15, 3)
    assert distorted_files(p, detox_adversaries("worst", 5, 15, 3)) == 2  # ⌊5/2⌋ groups
    assert distorted_files(p, detox_adversaries("benign", 5, 15, 3)) == 0  # one per group
    assert distorted_files(p, detox_adversaries("benign", 7, 15, 3)) == 2
    assert distorted_files(p, detox_adversaries("whole_group", 4, 15, 3)) == 1  # 0-2, 3
    assert distorted_files(p, detox_adversaries("whole_group", 5, 15, 3)) == 2  # 0-2, 3-4
    with pytest.raises(ValueError, match="valid: worst, benign, whole_group"):
        detox_adversaries("nasty", 1, 15, 3)


# ---------------------------------------------------------------- schedule
def test_lr_decay_is_byzshields():
    # ByzShield's master: at 1-based step i with i % lr_step == 0, lr = lr0·gamma^(i // lr_step)
    lr, gamma, period = 0.05, 0.96, 15
    current = lr
    for i in range(1, 100):
        if i % period == 0:
            current = lr * gamma ** (i // period)
        assert lr_at(i - 1, lr, gamma, period) == pytest.approx(current)
    assert lr_at(50, 0.1, 0.5, None) == 0.1


def test_epoch_sampling_and_step_indices():
    n, f, b = 103, 4, 5  # 5 steps per epoch, 3 samples left over
    assert steps_per_epoch(n, f, b) == 5
    assert total_steps(1000, 3, 5) == 15 and total_steps(7, 3, 5) == 7
    assert total_steps(9, None, 5) == 9
    for epoch in range(2):
        got = torch.cat([epoch_indices(n, f, b, 0, epoch * 5 + s).flatten() for s in range(5)])
        assert len(set(got.tolist())) == 100  # no sample twice within an epoch
    assert not torch.equal(epoch_indices(n, f, b, 0, 0), epoch_indices(n, f, b, 0, 5))
    # the workers' draw equals the in-process driver's
    x = torch.arange(n).float().unsqueeze(1)
    y = torch.arange(n)
    for step in range(3):
        _, want = draw_files(x, y, f, b, 7, step)
        assert torch.equal(step_indices(n, f, b, 7, step, epochs=False), want)


# ---------------------------------------------------------------- the command line
def test_byzshield_flags_map_onto_the_config(tmp_path):
    args = byz_args("--approach=mols", "--group-size=3", "--batch-size=250", "--lr=0.05",
                    "--momentum=0.9", "--network=LeNet", "--dataset=MNIST", "--mode=bulyan",
                    "--worker-fail=3", "--lis-simulation=simulate", "--epochs=5",
                    "--max-steps=40", "--eval-freq=10", "--gamma=0.96", "--lr-step=15",
                    "--byzantine-gen=hard_coded", "--err-mode=rev_grad", "--adversarial=-100",
                    "--comm-type=Bcast", "--compress-grad=compress", f"--log-dir={tmp_path}")
    cfg = build_config(args, 15, "x")
    ra, t = cfg.redundancy_args, cfg.train_args
    assert (t.client_num_in_total, t.comm_round, t.learning_rate, t.momentum) == (15, 40, 0.05,
                                                                                 0.9)
    assert ra.files_batch_size == 10  # 250 samples split into F = 25 files
    assert ra.lis_simulation and ra.attack_params == {"z": 1.0}
    assert (ra.mode, ra.adversary_choice, ra.epochs, ra.gamma, ra.lr_step, ra.eval_freq) == (
        "bulyan", "worst_case", 5, 0.96, 15, 10)
    assert cfg.model_args.model == "LeNet" and cfg.data_args.dataset == "MNIST"
    detox_cfg = build_config(byz_args("--approach=draco_lite_attack", "--group-size=3",
                                      "--batch-size=50", "--detox-attack=benign",
                                      "--err-mode=foe", "--rama-m=-1"), 15, "y")
    assert detox_cfg.redundancy_args.files_batch_size is None  # b = 50 per group
    assert detox_cfg.train_args.batch_size == 50
    assert detox_cfg.redundancy_args.err_mode == "ipm"
    assert detox_cfg.redundancy_args.attack_params == {"epsilon": 100.0}
    assert build_config(byz_args("--mode=normal"), 15, "z").redundancy_args.mode == "mean"


@pytest.mark.parametrize(("argv", "needle"), [
    (["--approach=molls", "--n=16"], "approach: unknown 'molls'; valid: baseline, mols"),
    (["--approach=mols", "--group-size=4", "--n=16"], "mols needs K = r·l"),
    (["--detox-attack=nasty", "--n=16"], "detox_attack has invalid value 'nasty'"),
    (["--approach=mols", "--group-size=3", "--batch-size=10", "--n=16"], "smaller than the F"),
    (["--approach=mols"], "--n: give the number of processes"),
    (["--checkpoint-step=40", "--n=16"], "--resume RUN_DIR"),
])
def test_byzshield_bad_flags_one_line(capsys, argv, needle):
    assert main(["byzshield", *argv, "--simulate"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("flags", "needle"), [
    ([], "model backup '{dir}/model_step_4' cannot be read ("),
    (["--eval-freq=0"], "--eval-freq must be >= 1, got 0"),
    (["--eval-batch-size=0"], "--eval-batch-size must be >= 1, got 0"),
])
def test_evaluate_corrupt_backup_or_bad_flag_one_line(tmp_path, capsys, flags, needle):
    (tmp_path / "model_step_4").write_bytes(b"torn")
    argv = ["evaluate", f"--model-dir={tmp_path}", "--network=lr", "--dataset=digits", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle.format(dir=tmp_path) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_evaluate_backup_of_another_model_one_line(tmp_path, capsys):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "model_step_4")
    assert main(["evaluate", f"--model-dir={tmp_path}", "--network=lr",
                 "--dataset=digits"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model 'lr'" in err and "Traceback" not in err


def test_simulated_run_backups_evaluator_and_lr(tmp_path, capsys):
    argv = ["byzshield", "--approach=draco_lite_attack", "--group-size=3", "--n=16",
            "--worker-fail=2", "--detox-attack=whole_group", "--err-mode=rev_grad",
            "--mode=coord-median", "--dataset=digits", "--network=lr", "--batch-size=16",
            "--lr=0.1", "--momentum=0.9", "--max-steps=12", "--eval-freq=4", "--gamma=0.5",
            "--lr-step=5", "--epochs=100", f"--log-dir={tmp_path}", "--run-name=r",
            "--simulate"]
    assert main(argv) == 0
    run = tmp_path / "r"
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in recs] == [0.1] * 4 + [0.05] * 5 + [0.025] * 3
    assert all(r["adversaries"] == [0, 1] and r["distorted_files"] == 1 for r in recs)
    backups = run / "backups"
    assert sorted(p.name for p in backups.glob("model_step_*")) == [
        "model_step_12", "model_step_4", "model_step_8"]
    assert yaml.safe_load((backups / "backup.yaml").read_text())["model"] == "lr"
    capsys.readouterr()
    assert main(["evaluate", f"--model-dir={backups}", "--eval-freq=4"]) == 0
    rows = list(csv.DictReader((backups / "accuracy.csv").open()))
    assert [int(r["step"]) for r in rows] == [4, 8, 12]
    assert float(rows[-1]["prec1"]) == pytest.approx(recs[-1]["test_accuracy"], abs=1e-6)
    assert all(float(r["prec1"]) <= float(r["prec5"]) for r in rows)
    assert (backups / "accuracy.png").stat().st_size > 1000
    # a second run into the same train-dir would overwrite the backups: refused
    again = [a for a in argv if not a.startswith("--run-name")] + ["--run-name=s",
                                                                    f"--train-dir={backups}"]
    assert main(again) == 2
    assert "already holds 3 model backups" in capsys.readouterr().err


def test_epochs_end_the_run(tmp_path):
    # digits has 1437 training samples; F·b = 15·16 = 240 → 5 steps per epoch; 2 epochs = 10
    assert main(["byzshield", "--approach=baseline", "--n=16", "--worker-fail=0",
                 "--dataset=digits", "--network=lr", "--batch-size=16", "--epochs=2",
                 "--max-steps=100", "--eval-freq=5", f"--log-dir={tmp_path}", "--run-name=e",
                 "--simulate"]) == 0
    recs = (tmp_path / "e" / "metrics.jsonl").read_text().splitlines()
    assert len(recs) == 10


def test_diverged_run_says_so(tmp_path, caplog):
    # maj_vote: DETOX vote then the plain mean; two colluders win group 0 with a huge constant
    caplog.set_level(logging.ERROR)
    assert main(["byzshield", "--approach=maj_vote", "--group-size=3", "--n=16",
                 "--worker-fail=2", "--byzantine-gen=hard_coded", "--err-mode=constant",
                 "--set=redundancy_args.attack_params={value: 1.0e+38}", "--dataset=digits",
                 "--network=lr", "--batch-size=16", "--lr=100", "--max-steps=6",
                 "--eval-freq=3", f"--log-dir={tmp_path}", "--run-name=d", "--simulate"]) == 0
    summary = yaml.safe_load((tmp_path / "d" / "summary.json").read_text())
    step = summary["diverged_at"]
    assert 0 <= step < 6
    assert f"the run diverged at step {step}" in caplog.text
    recs = [json.loads(x) for x in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("diverged_at") == step for r in recs[step:])
    assert all("diverged_at" not in r for r in recs[:step])
