"""The torch.distributed runtime with real processes on 127.0.0.1 (gloo).

Ranks are started by :func:`shieldwall.runtime.spawn.spawn_local` (forked from a fork server that
imported torch once: milliseconds per rank), by ``torchrun`` and by ``mpirun``. Every run is
compared with the simulator on the same config: same final parameters, same Byzantine sets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from shieldwall.config import load_config
from shieldwall.runtime._faults import ROGUE_KINDS
from shieldwall.runtime.spawn import free_port, spawn_local

LAUNCH_TIMEOUT = 240  # seconds; generous: the test machine may be shared


def write_config(tmp_path: Path, name: str, **sections: dict) -> Path:
    raw = {
        "common_args": {"random_seed": 0},
        "data_args": {"dataset": "digits", "partition_method": "iid"},
        "model_args": {"model": "lr"},
        "train_args": {"federated_optimizer": "FedAvg", "client_num_in_total": 6,
                       "comm_round": 4, "batch_size": 16, "learning_rate": 0.05},
        "device_args": {"num_threads": 1},
        "comm_args": {"round_timeout": 120},
        "tracking_args": {"log_file_dir": str(tmp_path / "runs"), "enable_tensorboard": False,
                          "progress_bar": False},
        "attack_args": {"enable_attack": True, "attack_type": "byzantine",
                        "attack_mode": "random", "byzantine_client_num": 1},
        "defense_args": {"enable_defense": True, "defense_type": "median"},
    }
    for section, body in sections.items():
        raw.setdefault(section, {}).update(body)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def simulate(config: Path) -> Path:
    from shieldwall.train import train

    cfg = load_config(config, ["comm_args.runtime=simulator", "tracking_args.run_name=sim"])
    return Path(train(cfg)["run_dir"])


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line]


def final_params(run_dir: Path) -> torch.Tensor:
    return torch.load(run_dir / "final_params.pt")


def launch(world: int, argv: list[str], tmp_path: Path, **kwargs) -> list[int | None]:
    """Fork ``world`` ranks of ``shieldwall ARGV``; exit codes (``None``: killed, hung)."""
    ranks = spawn_local(world, argv, log_dir=tmp_path / "logs", method="forkserver", **kwargs)
    codes = [ranks[0].wait(LAUNCH_TIMEOUT)]
    codes += [r.wait(15) for r in ranks[1:]]
    for r in ranks:
        r.kill()
    if codes[0] is None:
        pytest.fail("the server did not finish:\n" + ranks[0].log()[-3000:])
    return codes


def assert_same_run(dist_dir: Path, sim_dir: Path) -> list[dict]:
    """Same parameters (1e-5) and Byzantine bookkeeping as the simulator; returns the records."""
    assert torch.allclose(final_params(dist_dir), final_params(sim_dir), atol=1e-5, rtol=0)
    got, want = records(dist_dir), records(sim_dir)
    assert [r["round"] for r in got] == [r["round"] for r in want]
    assert [r["byzantine"] for r in got] == [r["byzantine"] for r in want]
    assert all(r["byzantine"] for r in got)
    assert all("rejected" not in r for r in got)
    return got


def test_fedavg_four_ranks_match_the_simulator(tmp_path):
    config = write_config(tmp_path, "fedavg")
    codes = launch(4, ["run", str(config), "--run-name", "dist"], tmp_path)
    assert codes == [0, 0, 0, 0]
    recs = assert_same_run(tmp_path / "runs" / "dist", simulate(config))
    assert recs[-1]["test_accuracy"] > 0.8


def test_ps_sgd_four_ranks_match_the_simulator(tmp_path):
    config = write_config(
        tmp_path, "pssgd",
        train_args={"federated_optimizer": "PS-SGD", "comm_round": 30, "batch_size": 32,
                    "learning_rate": 0.1, "momentum": 0.9},
        validation_args={"frequency_of_the_test": 10},
        attack_args={"attack_type": "sign_flip", "attack_mode": None},
        defense_args={"defense_type": "trimmed_mean"},
    )
    codes = launch(4, ["run", str(config), "--run-name", "dist"], tmp_path)
    assert codes == [0, 0, 0, 0]
    recs = assert_same_run(tmp_path / "runs" / "dist", simulate(config))
    assert recs[-1]["test_accuracy"] > 0.8


def test_rogue_frames_and_a_stalled_rank_are_rejected_and_the_run_goes_on(tmp_path):
    # Rank 1 (clients 0, 3) sends a different malformed frame for each client and round; rank 2
    # (clients 1, 4) stops answering in round 1; rank 3 (clients 2, 5) is honest.
    config = write_config(
        tmp_path, "chaos", train_args={"comm_round": 5},
        comm_args={"round_timeout": 4, "max_update_norm": 1e6},
        attack_args={"enable_attack": False},
        defense_args={"byzantine_client_num": 1},
    )
    faults = {"SHIELDWALL_TEST_FAULTS": "1:rogue;2:stall@1", "SHIELDWALL_TEST_STALL_S": "300"}
    codes = launch(4, ["run", str(config), "--run-name", "dist"], tmp_path, env=faults)
    assert codes[0] == 0 and codes[1] == 0 and codes[3] == 0  # rank 2 stalled: killed
    recs = records(tmp_path / "runs" / "dist")
    assert len(recs) == 5
    reasons = [r["rejected"] for r in recs]
    assert all({"0", "3"} <= set(rej) and not {"2", "5"} & set(rej) for rej in reasons)
    rogue = [rej[c] for rej in reasons for c in ("0", "3")]  # the 10 kinds in order
    expected = ["non-finite", "shape (649,)", "oversize payload", "dtype torch.float16",
                "above the bound", "non-finite", "malformed frame", "frame of client 1003",
                "num_samples 1000000000000", "computation failed"]
    assert len(expected) == len(ROGUE_KINDS)
    assert all(want in got for want, got in zip(expected, rogue)), rogue
    assert not {"1", "4"} & set(reasons[0])
    for rej in reasons[1:]:
        assert rej["1"].startswith("timeout: rank 2 lost in round 1: no answer within 4 s")
        assert rej["4"] == rej["1"]
    assert recs[1]["round_time"] >= 4 > recs[2]["round_time"]  # lost ranks are not waited for
    assert recs[-1]["test_accuracy"] > 0.8


def test_lost_worker_stops_the_run_and_torchrun_resumes_it(tmp_path):
    config = write_config(
        tmp_path, "stop", train_args={"comm_round": 5, "checkpoint_frequency": 1},
        comm_args={"on_worker_loss": "stop"},
    )
    codes = launch(3, ["run", str(config), "--run-name", "dist"], tmp_path,
                   env={"SHIELDWALL_TEST_FAULTS": "2:die@2"})
    assert codes == [1, 0, 17]
    server_log = (tmp_path / "logs" / "rank-0.log").read_text()
    assert "shieldwall: stopped: worker rank 2 lost in round 2: connection closed" in server_log
    assert "Traceback" not in server_log  # one clear line, exit code 1
    assert "on_worker_loss is 'stop'" in server_log
    run_dir = tmp_path / "runs" / "dist"
    assert [r["round"] for r in records(run_dir)] == [0, 1]

    # Resume with torchrun and another world size: workers hold no state.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SHIELDWALL_TEST_FAULTS", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
           "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
           "-m", "shieldwall", "run", "--resume", str(run_dir)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming" in out.stderr and "(torchrun, gloo)" in out.stderr
    recs = assert_same_run(run_dir, simulate(config))
    assert recs[-1]["test_accuracy"] > 0.8
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["dist", "sim"]


@pytest.mark.skipif(shutil.which("mpirun") is None,
                    reason="mpirun not on PATH (Debian: apt-get install openmpi-bin)")
def test_mpirun_fedml_shape_matches_the_simulator(tmp_path):
    # FedML's shape: mpirun -np (worker_num + 1), one client per worker rank, backend MPI.
    config = write_config(
        tmp_path, "fedml", train_args={"client_num_in_total": 3, "comm_round": 5},
        device_args={"worker_num": 3}, comm_args={"backend": "MPI"},
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "MASTER_PORT": str(free_port())}
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "4",
           "-x", "MASTER_PORT", "-x", "OMP_NUM_THREADS",
           sys.executable, "-m", "shieldwall", "run", str(config), "--run-name", "dist"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert out.stderr.count("(mpirun, gloo), 1 clients, up") == 3
    recs = assert_same_run(tmp_path / "runs" / "dist", simulate(config))
    assert recs[-1]["test_accuracy"] > 0.8
