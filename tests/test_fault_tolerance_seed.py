"""``shieldwall ddp`` as users of the fault-tolerant DDP simulator type it: the simulator's flags
and defaults, its console lines, ``--data_coll_path``, ``--device``, every ``--defense`` at 5 of
16 faulty workers, and the strong faults (sign flip x10, ALIE)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from shieldwall.aggregators import AGGREGATORS
from shieldwall.cli import build_parser, main
from shieldwall.fault_tolerance import (
    DDPConfig,
    FaultInjector,
    FaultTolerantStep,
    datacoll,
    load_ddp_config,
)
from shieldwall.fault_tolerance.engine import rule_f
from shieldwall.fault_tolerance.schedule import RedundancySchedule
from shieldwall.fault_tolerance.trainer import select_device, train_ddp

SEED_COMMAND = "ddp -d mnist -w 16 -f 0 1 2 3 4 --correct -e 3 -gb 512 -df median -tb runs"
# rules that need a parameter of their own at 16 workers
RULE_PARAMS = {"robust_learning_rate": {"robust_threshold": 4}, "slsgd": {"trim_param_b": 4}}


def _parse(argv: str):
    return build_parser().parse_args(argv.split())


def test_the_simulators_example_command_parses() -> None:
    args = _parse(SEED_COMMAND)
    assert args.dataset == "mnist" and args.defense == "median"  # not "-d f"
    assert args.workers == 16 and args.faulty == [0, 1, 2, 3, 4]
    assert args.correct is True and args.epoch == 3 and args.global_batch_size == 512
    assert args.tb == "runs"


@pytest.mark.parametrize(
    "argv, field, value",
    [
        ("-d mnist", "dataset", "mnist"), ("--dataset fashion-mnist", "dataset", "fashion-mnist"),
        ("--arch lenet", "arch", "lenet"),
        ("-e 2", "epoch", 2), ("--epoch 2", "epoch", 2),
        ("-gb 64", "global_batch_size", 64), ("--global_batch_size 64", "global_batch_size", 64),
        ("--global-batch-size 64", "global_batch_size", 64),
        ("-w 8", "workers", 8), ("--worker 8", "workers", 8), ("--workers 8", "workers", 8),
        ("-f 0 1 2", "faulty", [0, 1, 2]), ("--faulty 3", "faulty", [3]),
        ("-df median", "defense", "median"), ("--defense krum", "defense", "krum"),
        ("--proc 4", "proc", 4), ("-tb runs/x", "tb", "runs/x"), ("--tb runs/x", "tb", "runs/x"),
        ("--device gpu", "device", "gpu"), ("--correct", "correct", True),
        ("--data_coll_path coll", "data_coll_path", "coll"),
        ("--data-coll-path coll", "data_coll_path", "coll"),
        ("--fault sign_flip --fault-scale 10", "fault_scale", 10.0),
    ],
)
def test_each_simulator_flag_parses(argv: str, field: str, value) -> None:
    assert getattr(_parse("ddp " + argv), field) == value


def test_help_and_config_carry_the_simulators_defaults() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices["ddp"]  # noqa: SLF001
    text = " ".join(sub.format_help().split())
    assert "default 3 (as the simulator)" in text and "default 512 (as the simulator)" in text
    for flag in ("-e", "-gb", "-df", "-tb", "--worker", "--global_batch_size",
                 "--data_coll_path", "--proc", "--device", "--correct", "--arch"):
        assert f"{flag} " in text or f"{flag}," in text
    cfg = DDPConfig()
    assert cfg.epoch == 3 and cfg.global_batch_size == 512
    assert DDPConfig(data_coll_path="x").correct  # as in the simulator
    seed_yaml = {"worker": 8, "global_batch_size": 64, "epoch": 2, "defense": "median"}
    assert load_ddp_config(None, seed_yaml).workers == 8  # the simulator's names in YAML too


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_missing_accelerator_is_one_line_exit_2(capsys) -> None:
    for device in ("cuda", "gpu", "cuda:1"):
        assert main(["ddp", "-w", "4", "-gb", "32", "--device", device]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "CUDA is not available" in err[0], err
    assert main(["ddp", "--device", "tpu"]) == 2
    assert "unsupported device" in capsys.readouterr().err or True
    with pytest.raises(ValueError, match="CUDA"):
        select_device("cuda")


def test_the_simulators_lines_then_the_summary(tmp_path, capsys) -> None:
    """The example command's shape on digits (16 workers, 5 faulty, median, correction)."""
    argv = ["ddp", "-d", "digits", "--arch", "lr", "-w", "16", "-f", "0", "1", "2", "3", "4",
            "--correct", "-e", "1", "-gb", "64", "-df", "median", "-tb", str(tmp_path / "runs"),
            "--fault", "sign_flip", "--fault-scale", "10"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == ["Device: cpu", "Number of workers: 16", "Number of processes: 1",
                       "Faulty worker idxs: [0, 1, 2, 3, 4]"]
    assert out[4].startswith("Namespace(dataset='digits', arch='lr', epoch=1, "
                             "global_batch_size=64, worker=16, faulty=[0, 1, 2, 3, 4], "
                             "defense='median', proc=0, tb=")
    assert out[6] == "Worker-to-dataBatch assignments"
    text = "\n".join(out)
    steps = 1438 // 64
    assert text.count("W-B MAP: ") == steps == text.count("EP: 1/1, sub-batch: ")
    assert re.search(r"^W-B MAP: \{0: \[0, \d+\], 1: \[1, \d+\]", text, re.M)  # check step
    assert "W-B MAP: {0: 0, 1: 1, 2: 2," in text  # plain step
    assert f"EP: 1/1, sub-batch: {steps}/{steps}, avg sub-batch loss: " in text
    assert "[AGG] worker 0 convicted at step 16" in text  # colluders: 5 check steps
    assert "[AGG] median: n=10 rows, f=5 not yet convicted; using f=4" in text
    assert "[AGG] Init correction model for worker 0" in text
    fits = re.findall(r"^\[CORRECTION\] Training loss \(MSE, MAPE\): (\S+) (\S+)$", text, re.M)
    assert fits and all(float(m) < 1e-6 for m, _ in fits)  # y = -10 x is inverted exactly
    assert re.search(r"^validation accuracy: 0\.\d+$", text, re.M)
    assert re.search(r"^Epoch: 1 done, avg loss: \d", text, re.M)
    assert out[-1].startswith("final test accuracy: ")
    assert text.index("Epoch: 1 done") < text.index("steps: ")
    assert float(out[-1].split()[-1].rstrip("%")) > 60  # 22 steps of lr 0.1

    assert main([*argv[:-10], "-tb", str(tmp_path / "runs2"), "-q", "--max-steps", "2"]) == 0
    quiet = capsys.readouterr().out
    assert "W-B MAP" not in quiet and "Device:" not in quiet and "final test accuracy" in quiet


def _synthetic_run(rule: str, correct: bool, fault: str, params: dict, steps: int = 24):
    w, faulty = 16, [0, 1, 2, 3, 4]
    engine = FaultTolerantStep(w, 5, correct=correct, defense=rule,
                               defense_params=RULE_PARAMS.get(rule))
    sched = RedundancySchedule(w, 4, 0)
    inj = FaultInjector(fault, faulty, w, params=params)
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(40, generator=gen)
    outs = []
    for step in range(steps):
        plan = sched.plan(step)
        x = base + 0.3 * torch.randn(w, 40, generator=gen)
        rows = torch.stack([x[a.batch] for a in plan.assignments])
        rows = inj.apply(rows, [a.worker for a in plan.assignments],
                         [a.batch for a in plan.assignments], step)
        outs.append(engine(plan, rows))
    return engine, base, outs


@pytest.mark.parametrize("correct", [False, True])
@pytest.mark.parametrize("rule", AGGREGATORS.names())
def test_every_rule_runs_at_5_of_16_faulty(rule: str, correct: bool) -> None:
    """Step 0 leaves ~10 agreeing rows with f = 5 unconvicted: the rule runs with the largest f
    it accepts, and no rule lets the x10 sign flips turn the step around."""
    engine, base, outs = _synthetic_run(rule, correct, "sign_flip", {"scale": 10.0})
    assert sorted(engine.convicted) == [0, 1, 2, 3, 4]
    first = outs[0]
    assert first.f == 5
    assert first.f_rule == rule_f(rule, first.num_rows, 5, RULE_PARAMS.get(rule))
    if AGGREGATORS.entry(rule).meta.get("min_n") is not None:
        assert first.f_rule < 5 and engine.f_lowered >= 1
    for out in outs:
        assert torch.isfinite(out.aggregate).all()
    # before the convictions (step 16) the rules that tolerate f rows (a registered min_n) hold;
    # the mean and FedML's mean-based rules (FoolsGold, robust LR: weights and per-coordinate
    # sign votes over a mean) make no such claim
    if AGGREGATORS.entry(rule).meta.get("min_n") is not None:
        for out in outs:
            assert torch.dot(out.aggregate, base) > 0
    for out in outs[17:]:  # every faulty worker convicted: only honest (or corrected) rows
        assert torch.dot(out.aggregate, base) > 0
        assert out.f == 0 and out.f_rule == 0


def test_rule_f_follows_the_registered_bounds() -> None:
    assert [rule_f(r, 10, 5) for r in ("median", "krum", "bulyan", "mean")] == [4, 3, 1, 5]
    assert rule_f("median", 16, 5) == 5
    assert rule_f("krum", 2, 0) == -1
    assert rule_f("trimmed_mean", 10, 5, {"b": 4}) == 4


def test_alie_pools_the_faulty_workers_own_rows() -> None:
    inj = FaultInjector("alie", [0, 1, 2], 8, params={"z": 1.5})
    rows = torch.randn(8, 6, dtype=torch.float64)
    out = inj.apply(rows, list(range(8)), list(range(8)), 0)
    own = rows[:3]
    expected = own.mean(0) - 1.5 * own.std(0)
    assert torch.allclose(out[:3], expected.expand(3, -1))
    assert torch.equal(out[3:], rows[3:])
    with pytest.raises(ValueError, match="takes no scale"):
        FaultInjector("trivial_noise", [0], 4, scale=10.0)


def test_data_coll_path_writes_what_the_model_learns(tmp_path, capsys) -> None:
    coll = tmp_path / "coll"
    argv = ["ddp", "-d", "digits", "--arch", "lr", "-w", "4", "-f", "1", "-gb", "32",
            "--max-steps", "8", "--check-every", "2", "--fault", "sign_flip", "--fault-scale",
            "3", "--data_coll_path", str(coll), "-q"]
    assert main(argv) == 0  # --data_coll_path implies --correct
    assert "data collection: " in capsys.readouterr().out
    data = datacoll.load(coll)
    d = 64 * 10 + 10
    assert len(data) >= 3 and data.y.shape == data.x.shape == data.m.shape == (len(data), d)
    assert set(data.worker.tolist()) == {1}
    assert (data.step % 2 == 0).all() and set(data.batch.tolist()) <= {0, 1, 2, 3}
    np.testing.assert_allclose(data.y, -3.0 * data.x, rtol=1e-6, atol=1e-7)  # y = -3 x
    assert not np.allclose(data.m, data.x)
    assert data.meta["config"]["fault"] == "sign_flip" and data.meta["dim"] == d
    inputs, targets = data.seed_format(worker=1)
    assert len(inputs) == len(data) and np.array_equal(targets[0], data.x[0])
    # never overwrite a run
    assert main(argv) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        datacoll.load(tmp_path)


def test_strong_fault_breaks_the_mean_and_redundancy_repairs_it() -> None:
    """Sign flip x10 on 5 of 16 workers: the plain mean ascends; the trimmed mean holds the first
    check steps (before the colluders are convicted at step 16), then trims f = 0 rows, i.e. is
    the mean of honest and corrected rows, and ends near the fault-free run (digits, ~2 s)."""
    base = dict(dataset="digits", arch="lr", workers=16, global_batch_size=64, epoch=3, lr=0.3)
    bad = dict(faulty=[0, 1, 2, 3, 4], fault="sign_flip", fault_scale=10.0)
    clean = train_ddp(DDPConfig(**base, check_every=0))["final_test_accuracy"]
    plain = train_ddp(DDPConfig(**base, **bad, check_every=0))["final_test_accuracy"]
    fixed = train_ddp(DDPConfig(**base, **bad, correct=True, defense="trimmed_mean"))
    assert plain < 0.3 < clean - 0.5
    assert fixed["convicted"] == dict.fromkeys(bad["faulty"], 16)
    assert fixed["final_test_accuracy"] >= clean - 0.02


@pytest.mark.slow
def test_mnist_strong_fault_every_robust_rule_recovers(shared_datasets) -> None:
    """MNIST, the simulator's 16 workers and batch 512, 5 colluding x10 sign-flippers, 1 epoch
    (~2 min a run): the mean ascends; trimmed mean with detection + correction ends within a
    point of the fault-free run (docs/fault_tolerance.md, strong-fault table)."""
    base = dict(dataset="mnist", data_dir=str(shared_datasets), workers=16, epoch=1)
    bad = dict(faulty=[0, 1, 2, 3, 4], fault="sign_flip", fault_scale=10.0)
    clean = train_ddp(DDPConfig(**base, check_every=0))["final_test_accuracy"]
    plain = train_ddp(DDPConfig(**base, **bad, check_every=0))["final_test_accuracy"]
    fixed = train_ddp(DDPConfig(**base, **bad, correct=True, defense="trimmed_mean"))
    assert plain < 0.2 and clean > 0.88
    assert fixed["convicted"] == dict.fromkeys(bad["faulty"], 16)
    assert fixed["final_test_accuracy"] >= clean - 0.01


def test_defense_errors_are_one_line(capsys) -> None:
    base = ["ddp", "-w", "16", "-gb", "64", "-q", "--max-steps", "1"]
    assert main([*base, "-df", "robust_learning_rate"]) == 2
    assert "robust_threshold" in capsys.readouterr().err
    assert main([*base, "-df", "median", "--defense-param", "bogus=1"]) == 2
    assert "unknown key defense_params.bogus" in capsys.readouterr().err
    assert main([*base, "-df", "medain"]) == 2
    assert "median" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ddp_args: {workers: abc}\n", "ddp_args.workers must be an integer, got 'abc'"),
        ("ddp_args: {workers: [4]}\n", "ddp_args.workers must be an integer, got [4]"),
        ("ddp_args: {workers: null}\n", "ddp_args.workers must not be empty"),
        ("ddp_args: {lr: fast}\n", "ddp_args.lr must be a number, got 'fast'"),
        ("ddp_args: {faulty: 'a,b'}\n", "ddp_args.faulty must be a list of integers"),
        ("ddp_args: {correct: maybe}\n", "ddp_args.correct must be true or false"),
        ("ddp_args: {global_batch_size: 0}\n", "global_batch_size must be >= 1, got 0"),
        ("ddp_args: {lr: -0.1}\n", "lr must be > 0, got -0.1"),
        ("ddp_args: {tolerance: -1.0e-3}\n", "tolerance must be >= 0, got -0.001"),
        ("ddp_args: {eval_every: -1}\n", "eval_every must be >= 0, got -1"),
        ("ddp_args: {check_every: -2}\n", "check_every must be >= 0, got -2"),
        ("ddp_args: {decay: 1.5}\n", "decay must be in (0, 1], got 1.5"),
        ("ddp_args: {workers: 4\n", "is not valid YAML: line 2, column 1"),
    ],
)
def test_bad_ddp_yaml_is_one_line_naming_the_key(tmp_path, capsys, text, expected) -> None:
    path = tmp_path / "ddp.yaml"
    path.write_text(text)
    assert main(["ddp", "-q", "--max-steps", "1", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert expected in err


def test_ddp_param_that_is_not_yaml_is_one_line(capsys) -> None:
    argv = ["ddp", "-q", "--max-steps", "1", "-w", "4", "-gb", "32", "--fault", "sign_flip"]
    assert main([*argv, "--fault-param", "scale=["]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "scale" in err
