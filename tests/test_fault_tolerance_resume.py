"""``shieldwall ddp --resume RUN_DIR``: a run interrupted after a checkpoint continues bit for
bit as the uninterrupted one (parameters, metrics, data collection), in one process and over
gloo processes; what would make it another run is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shieldwall.cli import main
from shieldwall.fault_tolerance.config import load_ddp_config
from shieldwall.fault_tolerance.trainer import build_setup, train_ddp

FLAGS = ["-w", "8", "-f", "1", "2", "--correct", "-gb", "64", "-e", "2", "--max-steps", "30",
         "--checkpoint-every", "10", "-q"]
SETTINGS = {"workers": 8, "faulty": [1, 2], "correct": True, "global_batch_size": 64,
            "epoch": 2, "max_steps": 30, "checkpoint_every": 10, "quiet": True}


class Crash(RuntimeError):
    """The process dies in the middle of a step."""


class DieAt:
    """A console that kills the run when step ``step`` is done computing (before it is logged
    or checkpointed), as a crash or kill -9 would."""

    def __init__(self, step: int) -> None:
        self.at = step

    def step(self, plan, *args, **kwargs) -> None:
        if plan.step == self.at:
            raise Crash(f"killed at step {self.at}")

    def validation(self, accuracy: float) -> None:
        pass

    def epoch_done(self, epoch: int) -> None:
        pass


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def interrupted(run: Path, at: int, **extra) -> None:
    cfg = load_ddp_config(None, {**SETTINGS, "tb": str(run), **extra})
    with pytest.raises(Crash):
        train_ddp(cfg, setup=build_setup(cfg), console=DieAt(at))


def checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddp") / "full"
    assert main(["ddp", *FLAGS, "-tb", str(run)]) == 0
    return run


def test_a_killed_run_resumes_bit_for_bit(uninterrupted, tmp_path, capsys):
    run = tmp_path / "run"
    interrupted(run, at=25)  # last checkpoint: step 20; steps 20-24 logged, then lost
    assert checkpoint(run)["step"] == 20
    assert [r["round"] for r in records(run)] == list(range(25))
    capsys.readouterr()
    assert main(["ddp", "--resume", str(run), "-q"]) == 0
    assert "final test accuracy" in capsys.readouterr().out
    full, resumed = checkpoint(uninterrupted), checkpoint(run)
    assert resumed["step"] == full["step"] == 30
    assert torch.equal(resumed["params"], full["params"])
    assert torch.equal(resumed["velocity"], full["velocity"])
    assert resumed["totals"] == full["totals"] and resumed["evals"] == full["evals"]
    assert records(run) == records(uninterrupted)  # the lost steps 20-24 logged once
    # a finished run resumed does nothing and reports the same result
    before = (run / "metrics.jsonl").read_bytes(), (run / "checkpoint.pt").read_bytes()
    assert main(["ddp", "--resume", str(run), "-q"]) == 0
    assert "final test accuracy" in capsys.readouterr().out
    assert ((run / "metrics.jsonl").read_bytes(), (run / "checkpoint.pt").read_bytes()) == before


def test_the_data_collection_resumes_with_the_run(tmp_path):
    from shieldwall.fault_tolerance import datacoll

    full, run = tmp_path / "full", tmp_path / "run"
    assert main(["ddp", *FLAGS, "-tb", str(full), "--data_coll_path", str(tmp_path / "c1")]) == 0
    interrupted(run, at=27, data_coll_path=str(tmp_path / "c2"))
    assert main(["ddp", "--resume", str(run), "-q"]) == 0
    a, b = datacoll.load(tmp_path / "c1"), datacoll.load(tmp_path / "c2")
    assert a.meta["shards"] == b.meta["shards"] and a.meta["num_pairs"] == b.meta["num_pairs"]
    assert len(a) > 0 and (a.step == b.step).all() and (a.y == b.y).all() and (a.x == b.x).all()


def test_resume_over_gloo_processes_continues_the_same_run(uninterrupted, tmp_path):
    run = tmp_path / "run"
    interrupted(run, at=12)  # checkpoint at 10, in one process
    assert main(["ddp", "--resume", str(run), "--proc", "2", "-q"]) == 0
    assert torch.equal(checkpoint(run)["params"], checkpoint(uninterrupted)["params"])
    assert [r["round"] for r in records(run)] == list(range(30))


@pytest.mark.parametrize(("argv", "expected"), [
    (["--lr", "0.5"], "lr (0.1 -> 0.5) would make it another run; only checkpoint_every"),
    (["-f", "3"], "faulty ([1, 2] -> [3])"),
    (["--config", "x.yaml"], "drop --config"),
    (["-tb", "elsewhere"], "drop -tb"),
])
def test_resume_refuses_what_would_make_another_run(uninterrupted, capsys, argv, expected):
    before = (uninterrupted / "checkpoint.pt").read_bytes()
    assert main(["ddp", "--resume", str(uninterrupted), *argv, "-q"]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert (uninterrupted / "checkpoint.pt").read_bytes() == before


def test_resume_cannot_shorten_a_run_to_before_its_checkpoint(uninterrupted, capsys):
    assert main(["ddp", "--resume", str(uninterrupted), "--max-steps", "25", "-q"]) == 2
    err = capsys.readouterr().err
    assert "is at step 30, past this run's last step 25" in err, err


def test_resume_without_a_run_or_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["ddp", "--resume", str(tmp_path), "-q"]) == 2
    assert "no ddp_config.yaml there" in capsys.readouterr().err
    run = tmp_path / "early"
    interrupted(run, at=3)  # before its first checkpoint
    assert main(["ddp", "--resume", str(run), "-q"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    (run / "checkpoint.pt").write_bytes(b"torn")
    assert main(["ddp", "--resume", str(run), "-q"]) == 2
    assert "ddp checkpoint" in capsys.readouterr().err


def test_errors_inside_gloo_processes_are_one_line(uninterrupted, tmp_path, capsys):
    """A setting or file every rank rejects (here: a missing data folder, a resume that would
    end before its checkpoint) is the same one line as in one process, not N tracebacks."""
    assert main(["ddp", "--proc", "2", "-d", "mnist", "--data-dir", str(tmp_path / "none"),
                 "-q"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("shieldwall: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "does not exist" in lines[0] and "pass --data-dir" in lines[0]
    assert main(["ddp", "--resume", str(uninterrupted), "--proc", "2", "--max-steps", "25",
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "past this run's last step 25" in err, err


def test_kill_9_after_a_checkpoint_loses_no_record_before_it(tmp_path):
    """A real process killed with SIGKILL: every record before the checkpoint's step is on disk
    (the log is flushed before each checkpoint), and the run resumes to the uninterrupted end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    argv = ["-w", "8", "-f", "1", "--correct", "-gb", "64", "-e", "30", "--max-steps", "600",
            "--checkpoint-every", "7", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "shieldwall", "ddp", *argv, "-tb", str(run)],
                            cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            path = run / "checkpoint.pt"
            if path.is_file() and checkpoint(run)["step"] >= 21:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    step = checkpoint(run)["step"]
    assert 21 <= step < 600, step
    rounds = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            rounds.append(json.loads(line)["round"])
        except ValueError:  # a torn last line (killed mid-write)
            break
    assert rounds[:step] == list(range(step))
    assert main(["ddp", "--resume", str(run), "--max-steps", str(step + 5), "-q"]) == 0
    assert [r["round"] for r in records(run)] == list(range(step + 5))
