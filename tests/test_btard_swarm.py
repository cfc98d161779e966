"""The open BTARD swarm on hivemind: real ``shieldwall peer`` processes on 127.0.0.1.

3 honest peers and 1 Byzantine (sign flipping) start a run; after a few steps one honest peer is
killed with SIGKILL and a new one joins through another peer's multiaddr (not the first peer's).
The run goes on; the newcomer downloads the agreed state and trains; the Byzantine peer is banned
and no honest one; every surviving honest peer ends with the same parameters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("hivemind", reason="the swarm extra (hivemind) is not installed")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "common_args": {"random_seed": 3},
    "data_args": {"dataset": "digits", "partition_method": "iid"},
    "model_args": {"model": "lr"},
    "device_args": {"num_threads": 1},
    "train_args": {"federated_optimizer": "BTARD", "client_num_in_total": 4, "comm_round": 40,
                   "batch_size": 16, "learning_rate": 0.1, "checkpoint_frequency": 0},
    "validation_args": {"frequency_of_the_test": 40},
    "attack_args": {"enable_attack": True, "attack_type": "sign_flip", "scale": 1000,
                    "byzantine_client_num": 1},
    "btard_args": {"tau": 1.0, "validators": 4, "signature": "auto"},
    "tracking_args": {"enable_tensorboard": False, "progress_bar": False},
}


def _start(cfg: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")  # noqa: SIM115 - closed with the proc
    return subprocess.Popen(
        [sys.executable, "-m", "shieldwall.cli", "peer", str(cfg), "--listen",
         "/ip4/127.0.0.1/tcp/0", "--start-peers", "4", "--phase-timeout", "10",
         "--step-interval", "0.5", "--run-dir", str(run_dir), *extra],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _identity(run_dir: Path) -> dict:
    return json.loads((run_dir / "identity.json").read_text())


def _steps(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_swarm_survives_kill_and_join_and_bans_the_byzantine_peer(tmp_path: Path) -> None:
    cfg = tmp_path / "swarm.yaml"
    cfg.write_text(yaml.safe_dump(dict(CONFIG, tracking_args=dict(
        CONFIG["tracking_args"], log_file_dir=str(tmp_path)))))
    dirs = {name: tmp_path / name for name in ("p0", "p1", "p2", "byz", "new")}
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["p0"] = _start(cfg, dirs["p0"])
        _wait(lambda: (dirs["p0"] / "identity.json").exists(), 120, "the first peer")
        first = _identity(dirs["p0"])["maddrs"][0]
        for name in ("p1", "p2", "byz"):
            extra = ["--initial-peers", first] + (["--byzantine"] if name == "byz" else [])
            procs[name] = _start(cfg, dirs[name], *extra)
        _wait(lambda: len(_steps(dirs["p0"])) >= 4, 240, "four steps")
        procs["p1"].send_signal(signal.SIGKILL)
        procs["p1"].wait()
        other = _identity(dirs["p2"])["maddrs"][0]
        procs["new"] = _start(cfg, dirs["new"], "--initial-peers", other)
        for name in ("p0", "p2", "new"):
            assert procs[name].wait(timeout=400) == 0, (tmp_path / f"{name}.log").read_text()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    byz = _identity(dirs["byz"])["pid"]
    honest = {_identity(dirs[n])["pid"] for n in ("p0", "p1", "p2", "new")}
    summaries = {n: json.loads((dirs[n] / "summary.json").read_text())
                 for n in ("p0", "p2", "new")}
    for name, s in summaries.items():
        banned = {int(p) for p in s["banned"]}
        assert byz in banned, name
        assert not banned & honest, (name, s["banned"])
    assert len({s["params_hash"] for s in summaries.values()}) == 1
    new_steps = _steps(dirs["new"])
    assert new_steps and new_steps[0]["round"] > 4  # joined mid-run
    assert sum(e["step_taken"] for e in new_steps) >= 3  # and trained
    survivors = _steps(dirs["p0"])
    assert survivors[-1]["round"] == CONFIG["train_args"]["comm_round"] - 1
    assert survivors[-1]["test_accuracy"] > 0.5
