"""Fault-tolerant data parallel end to end on the embedded digits: accuracy with and without
correction, the ``shieldwall ddp`` command (flags, YAML, debug map, TensorBoard) and the gloo
multi-process mode."""

from __future__ import annotations

import logging

import pytest
import torch

from shieldwall.cli import main
from shieldwall.fault_tolerance import DDPConfig
from shieldwall.fault_tolerance.trainer import train_ddp

# 16 workers, 5 faulty (noise sigma 1), softmax regression: ~2 s a run on one thread. Two seeds:
# a digits test split has 359 images (0.28 points each), so one seed's accuracy is a coarse number.
BASE = dict(dataset="digits", arch="lr", workers=16, global_batch_size=64, epoch=5, lr=0.3)
FAULTY = [0, 1, 2, 3, 4]
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def runs() -> dict[str, list[dict]]:
    cases = {
        "fault_free": dict(check_every=0),
        "plain": dict(faulty=FAULTY, check_every=0),
        "corrected": dict(faulty=FAULTY, check_every=4, correct=True),
    }
    return {
        name: [train_ddp(DDPConfig(**BASE, **kw, seed=seed)) for seed in SEEDS]
        for name, kw in cases.items()
    }


def _mean(results: list[dict], key: str) -> float:
    return sum(r[key] for r in results) / len(results)


def test_correction_matches_fault_free_accuracy(runs) -> None:
    clean, fixed = runs["fault_free"], runs["corrected"]
    for run in fixed:
        assert run["convicted"] == dict.fromkeys(FAULTY, 8)  # 3rd check step (0, 4, 8)
        assert run["false_convictions"] == [] and run["missed"] == []
        assert run["overhead"]["extra"] == pytest.approx(28 / 110)  # ceil(110/4) check steps
    acc_clean = _mean(clean, "final_test_accuracy")
    assert _mean(fixed, "final_test_accuracy") >= acc_clean - 0.01
    assert _mean(fixed, "final_test_loss") <= 1.1 * _mean(clean, "final_test_loss")


def test_plain_averaging_is_clearly_worse(runs) -> None:
    clean, plain = runs["fault_free"], runs["plain"]
    acc_clean = _mean(clean, "final_test_accuracy")
    assert _mean(plain, "final_test_accuracy") <= acc_clean - 0.04
    assert _mean(plain, "final_test_loss") >= 1.5 * _mean(clean, "final_test_loss")


def test_cli_prints_accuracy_and_logs(tmp_path, capsys, caplog) -> None:
    tb = tmp_path / "tb"
    args = ["ddp", "-d", "digits", "--arch", "lr", "-w", "4", "-f", "1", "--global-batch-size",
            "32", "--max-steps", "4", "--check-every", "2", "--correct", "--tb", str(tb)]
    with caplog.at_level(logging.DEBUG, logger="shieldwall.fault_tolerance"):
        assert main([*args, "--debug"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("final test accuracy: ")
    assert "convicted (worker: step): {1: 0}" in out
    assert "+50.0% compute" in out
    assert "step 1 plain: w0→[0] w1→[1] w2→[2] w3→[3]" in caplog.text
    assert (tb / "metrics.jsonl").read_text().count("\n") == 4
    assert list(tb.glob("events.out.tfevents.*"))

    config = tmp_path / "ddp.yaml"
    config.write_text(
        "ddp_args:\n  dataset: digits\n  arch: lr\n  workers: 4\n  faulty: [1]\n"
        "  global_batch_size: 32\n  max_steps: 4\n  check_every: 2\n  correct: true\n"
    )
    assert main(["ddp", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == out.strip().splitlines()[-1]


def test_cli_tb_dir_reused_keeps_the_earlier_run(tmp_path, capsys) -> None:
    """Rerunning with the same ``-tb`` writes DIR-2, not over the first run's metrics."""
    tb = tmp_path / "tb"
    args = ["ddp", "-d", "digits", "--arch", "lr", "-w", "4", "-f", "1", "--global-batch-size",
            "32", "--check-every", "2", "-tb", str(tb)]
    assert main([*args, "--max-steps", "4"]) == 0
    first = (tb / "metrics.jsonl").read_text()
    assert first.count("\n") == 4
    capsys.readouterr()
    assert main([*args, "--max-steps", "2"]) == 0
    assert f"metrics and TensorBoard scalars: {tmp_path / 'tb-2'}" in capsys.readouterr().out
    assert (tb / "metrics.jsonl").read_text() == first
    assert (tmp_path / "tb-2" / "metrics.jsonl").read_text().count("\n") == 2


def test_cli_user_errors(capsys) -> None:
    assert main(["ddp", "-w", "4", "-f", "9"]) == 2
    assert "outside 0..3" in capsys.readouterr().err
    assert main(["ddp", "--fault", "label_flip", "-f", "1", "-w", "4",
                 "--global-batch-size", "32"]) == 2
    assert "ddp faults act on gradients" in capsys.readouterr().err


def test_multiprocess_gloo_matches_simulator() -> None:
    """--proc 2: two gloo processes on 127.0.0.1 end with the simulator's parameters."""
    from shieldwall.fault_tolerance.distributed import run_distributed

    cfg = DDPConfig(dataset="digits", arch="lr", workers=4, faulty=[1], global_batch_size=32,
                    max_steps=6, check_every=2, correct=True, proc=2)
    dist_run = run_distributed(cfg)
    sim_run = train_ddp(cfg)
    assert dist_run["world_size"] == 2
    assert dist_run["max_param_divergence"] == 0.0
    assert dist_run["convicted"] == sim_run["convicted"] == {1: 0}
    assert torch.allclose(dist_run["params"], sim_run["params"], atol=1e-6)
    assert dist_run["final_test_accuracy"] == pytest.approx(sim_run["final_test_accuracy"])
