"""DETOX/ByzShield with a real parameter server and worker processes on 127.0.0.1 (gloo).

Ranks are forked by :func:`shieldwall.runtime.spawn.spawn_local` (K workers + the PS); every run
is compared with the in-process simulation of the same YAML: same parameters, same adversaries,
same distorted-file counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from shieldwall.config import load_config
from shieldwall.runtime.spawn import spawn_local

LAUNCH_TIMEOUT = 300  # seconds; generous: the test machine may be shared


def write_config(tmp_path: Path, name: str, *, k: int = 6, steps: int = 4, **red) -> Path:
    raw = {
        "common_args": {"random_seed": 0},
        "data_args": {"dataset": "digits"},
        "model_args": {"model": "lr"},
        "train_args": {"federated_optimizer": "PS-SGD", "client_num_in_total": k,
                       "comm_round": steps, "batch_size": 8, "learning_rate": 0.1,
                       "momentum": 0.9, "checkpoint_frequency": 1},
        "validation_args": {"frequency_of_the_test": steps},
        "device_args": {"num_threads": 1},
        "comm_args": {"round_timeout": 120},
        "tracking_args": {"log_file_dir": str(tmp_path / "runs"), "enable_tensorboard": False,
                          "progress_bar": False},
        "redundancy_args": {"enable": True, **red},
    }
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


def launch(world: int, argv: list[str], tmp_path: Path, **kwargs) -> list[int | None]:
    ranks = spawn_local(world, argv, log_dir=tmp_path / "logs", method="forkserver", **kwargs)
    codes = [ranks[0].wait(LAUNCH_TIMEOUT)]
    codes += [r.wait(20) for r in ranks[1:]]
    for r in ranks:
        r.kill()
    if codes[0] is None:
        pytest.fail("the parameter server did not finish:\n" + ranks[0].log()[-3000:])
    return codes


def assert_same_run(dist_dir: Path, sim_dir: Path) -> list[dict]:
    got_p = torch.load(dist_dir / "final_params.pt")
    want_p = torch.load(sim_dir / "final_params.pt")
    assert torch.allclose(got_p, want_p, atol=1e-5, rtol=0), (got_p - want_p).abs().max()
    got, want = records(dist_dir), records(sim_dir)
    for key in ("round", "adversaries", "distorted_files", "fallback_files"):
        assert [r[key] for r in got] == [r[key] for r in want], key
    assert all("rejected_workers" not in r for r in got)
    return got


@pytest.mark.parametrize(
    ("name", "red", "distorted"),
    [
        # MOLS K=6 (r=2, l=3, F=9), one worst-case adversary sending -100·g from its process:
        # its 3 files have no majority (1-1) and fall back to the replicas' median
        ("mols", {"approach": "mols", "group_size": 2, "worker_fail": 1,
                  "adversary_choice": "worst_case", "err_mode": "rev_grad"}, 0),
        # DETOX K=6 (3 groups of 2), ByzShield's worst attack on DETOX with q=2 (both workers
        # of group 0: that file is lost), ALIE simulated at the PS on the received gradients
        ("detox", {"approach": "draco_lite_attack", "group_size": 2, "worker_fail": 2,
                   "lis_simulation": True, "mode": "coord-median"}, 1),
    ],
)
def test_ps_and_six_workers_match_the_simulator(tmp_path, name, red, distorted):
    config = write_config(tmp_path, name, **red)
    codes = launch(7, ["run", str(config), "--run-name", "dist"], tmp_path)
    assert codes == [0] * 7, (tmp_path / "logs" / "rank-0.log").read_text()[-3000:]
    recs = assert_same_run(tmp_path / "runs" / "dist", simulate(config))
    assert all(r["distorted_files"] == distorted for r in recs)
    assert recs[-1]["bytes_up"] > recs[0]["bytes_up"] > 0
    # every worker computed exactly its own files: one frame per file held, per step
    log0 = (tmp_path / "logs" / "rank-0.log").read_text()
    assert "6 worker processes" in log0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["dist", "sim"]


def test_killed_worker_continue_and_stop(tmp_path):
    # DETOX K=6, r=3, no adversaries; worker rank 2 (worker 1, group 0) dies in step 2
    config = write_config(tmp_path, "lossy", steps=5, approach="draco-lite", group_size=3,
                          worker_fail=0)
    codes = launch(7, ["run", str(config), "--run-name", "cont"], tmp_path,
                   env={"SHIELDWALL_TEST_FAULTS": "2:die@2"})
    assert codes[0] == 0 and codes[2] == 17
    recs = records(tmp_path / "runs" / "cont")
    assert [r["round"] for r in recs] == [0, 1, 2, 3, 4]
    assert all("rejected_workers" not in r for r in recs[:2])
    for r in recs[2:]:  # its replicas are missing; the 2 others of its group still win the vote
        assert r["rejected_workers"]["1"].startswith("timeout: rank 2 lost in round 2")
        assert r["distorted_files"] == 0 and r["fallback_files"] == 0
        assert "missing_files" not in r
    # the lost worker's files were computed by its group mates: same model as without a loss
    want = torch.load(simulate(config) / "final_params.pt")
    got = torch.load(tmp_path / "runs" / "cont" / "final_params.pt")
    assert torch.allclose(got, want, atol=1e-5, rtol=0)

    stop = write_config(tmp_path, "stop", steps=5, approach="draco-lite", group_size=3,
                        worker_fail=0, )
    raw = yaml.safe_load(stop.read_text())
    raw["comm_args"]["on_worker_loss"] = "stop"
    stop.write_text(yaml.safe_dump(raw))
    codes = launch(7, ["run", str(stop), "--run-name", "stop"], tmp_path / "s",
                   env={"SHIELDWALL_TEST_FAULTS": "3:die@1"})
    assert codes[0] == 1 and codes[3] == 17
    log0 = (tmp_path / "s" / "logs" / "rank-0.log").read_text()
    assert "shieldwall: stopped: worker rank 3 lost in round 1" in log0
    assert "Traceback" not in log0
    assert [r["round"] for r in records(tmp_path / "runs" / "stop")] == [0]


def test_world_size_must_be_k_plus_one(tmp_path):
    config = write_config(tmp_path, "small", approach="mols", group_size=2)
    codes = launch(3, ["run", str(config), "--run-name", "x"], tmp_path)
    assert codes[0] == 2
    log0 = (tmp_path / "logs" / "rank-0.log").read_text()
    assert "n = K + 1 = 7 processes for K = 6" in log0 and "world size is 3" in log0


BYZ = ["--approach=mols", "--group-size=2", "--worker-fail=1", "--byzantine-gen=hard_coded",
       "--err-mode=constant", "--mode=coord-median", "--dataset=digits", "--network=lr",
       "--batch-size=36", "--lr=0.1", "--momentum=0.9", "--max-steps=6", "--eval-freq=3",
       "--gamma=0.5", "--lr-step=2", "--epochs=100"]


def test_byzshield_command_starts_ps_and_workers(tmp_path, capsys):
    from shieldwall.cli import main

    assert main(["byzshield", *BYZ, "--n=7", f"--log-dir={tmp_path}", "--run-name=d"]) == 0
    out = capsys.readouterr().out
    assert "started a parameter server and 6 workers on 127.0.0.1" in out
    assert "6 worker processes" in (tmp_path / "d.ranks" / "rank-0.log").read_text()
    assert main(["byzshield", *BYZ, "--n=7", f"--log-dir={tmp_path}", "--run-name=s",
                 "--simulate"]) == 0
    dist, sim = tmp_path / "d", tmp_path / "s"
    assert sorted(p.name for p in (dist / "backups").glob("model_step_*")) == [
        "model_step_3", "model_step_6"]
    for step in (3, 6):
        got = torch.load(dist / "backups" / f"model_step_{step}")
        want = torch.load(sim / "backups" / f"model_step_{step}")
        assert all(torch.allclose(got[k], want[k], atol=1e-5, rtol=0) for k in want)
    assert [r["lr"] for r in records(dist)] == [0.1, 0.05, 0.05, 0.025, 0.025, 0.0125]


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("mpirun") is None, reason="mpirun not on PATH")
def test_byzshield_hostfile_goes_through_mpirun(tmp_path, monkeypatch, capsys):
    from shieldwall.cli import main

    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost slots=7\n")
    assert main(["byzshield", *BYZ, "--n=7", f"--hostfile={hosts}", f"--log-dir={tmp_path}",
                 "--run-name=m"]) == 0
    assert main(["byzshield", *BYZ, "--n=7", f"--log-dir={tmp_path}", "--run-name=s",
                 "--simulate"]) == 0
    got = torch.load(tmp_path / "m" / "final_params.pt")
    want = torch.load(tmp_path / "s" / "final_params.pt")
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
