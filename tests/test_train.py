"""End-to-end runs in the simulator: accuracy, resume equality, Byzantine input, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from shieldwall.cli import main
from shieldwall.config import config_from_dict
from shieldwall.train import train

QUICKSTART = Path(__file__).resolve().parents[1] / "shieldwall" / "configs" / "quickstart.yaml"


def small_config(tmp_path: Path, **sections) -> dict:
    raw = {
        "data_args": {"dataset": "digits", "partition_method": "iid"},
        "model_args": {"model": "lr"},
        "train_args": {"federated_optimizer": "FedAvg", "client_num_in_total": 6,
                       "comm_round": 3, "batch_size": 16, "learning_rate": 0.05},
        "device_args": {"num_threads": 1},
        "tracking_args": {"log_file_dir": str(tmp_path), "enable_tensorboard": False},
    }
    for section, body in sections.items():
        raw.setdefault(section, {}).update(body)
    return raw


def records(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().split("\n")
            if line]


def test_quickstart_is_accurate_under_attack(tmp_path, capsys):
    assert main(["quickstart", "--log-dir", str(tmp_path), "--run-name", "qs"]) == 0
    out = capsys.readouterr().out
    assert "final test accuracy" in out
    summary = yaml.safe_load((tmp_path / "qs" / "summary.json").read_text())
    assert summary["final_test_accuracy"] > 0.85
    recs = records(tmp_path / "qs")
    assert len(recs) == 30
    assert all(len(r["byzantine"]) == 4 for r in recs)
    # Krum reports which row it kept; it is never a Byzantine one under this attack.
    assert all(set(r["selected"]).isdisjoint(r["byzantine"]) for r in recs)
    assert (tmp_path / "qs" / "tensorboard").is_dir()
    assert (tmp_path / "qs" / "checkpoint.pt").is_file()


def test_undefended_mean_is_hurt_by_the_same_attack(tmp_path):
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["defense_args"]["enable_defense"] = False
    raw["train_args"]["comm_round"] = 10
    raw["tracking_args"] = {"log_file_dir": str(tmp_path), "enable_tensorboard": False}
    summary = train(config_from_dict(raw))
    assert summary["final_test_accuracy"] < 0.75


@pytest.mark.parametrize(
    ("algorithm", "defense"),
    [("FedAvg", "median"), ("PS-SGD", "median"), ("FedAvg", "cclip"), ("PS-SGD", "foolsgold")],
)
def test_resume_matches_uninterrupted_run(tmp_path, algorithm, defense):
    """Stateful defenses (CenteredClip's start, FoolsGold's history) resume exactly too."""
    sections = {"train_args": {"federated_optimizer": algorithm, "comm_round": 6,
                               "momentum": 0.9, "checkpoint_frequency": 1},
                "attack_args": {"enable_attack": True, "attack_type": "byzantine",
                                "attack_mode": "random", "byzantine_client_num": 1},
                "defense_args": {"enable_defense": True, "defense_type": defense,
                                 **({"tau": 1.0, "bucket_size": 2} if defense == "cclip" else {})}}
    full = train(config_from_dict(small_config(tmp_path / "full", **sections)))
    half_raw = small_config(tmp_path / "half", **sections)
    half_raw["train_args"]["comm_round"] = 3
    half = train(config_from_dict(half_raw))
    half_raw["train_args"]["comm_round"] = 6
    resumed = train(config_from_dict(half_raw), resume=half["run_dir"])
    assert resumed["run_dir"] == half["run_dir"]
    a = torch.load(Path(full["run_dir"]) / "final_params.pt")
    b = torch.load(Path(resumed["run_dir"]) / "final_params.pt")
    assert torch.equal(a, b)
    assert [r["round"] for r in records(resumed["run_dir"])] == list(range(6))


@pytest.mark.parametrize("attack", ["nan", "inf", "huge"])
@pytest.mark.parametrize("defense", [None, "median"])
def test_malformed_byzantine_updates_never_crash(tmp_path, attack, defense):
    sections = {"attack_args": {"enable_attack": True, "attack_type": attack,
                                "byzantine_client_num": 2}}
    if defense:
        sections["defense_args"] = {"enable_defense": True, "defense_type": defense}
    summary = train(config_from_dict(small_config(tmp_path, **sections)))
    assert summary["final_test_accuracy"] > 0.8
    recs = records(summary["run_dir"])
    assert all(len(r["rejected"]) == 2 for r in recs)


def test_label_flipping_poisons_local_training(tmp_path):
    base = small_config(tmp_path / "a", train_args={"client_num_in_total": 4, "comm_round": 2})
    clean = train(config_from_dict(base))
    flipped = dict(base, tracking_args={"log_file_dir": str(tmp_path / "b"),
                                        "enable_tensorboard": False},
                   attack_args={"enable_attack": True, "attack_type": "label_flipping",
                                "byzantine_client_num": 4})
    poisoned = train(config_from_dict(flipped))
    assert poisoned["final_test_accuracy"] < 0.2 < clean["final_test_accuracy"]


def test_plot_writes_png(tmp_path):
    run = train(config_from_dict(small_config(tmp_path)))
    out = tmp_path / "cmp.png"
    assert main(["plot", run["run_dir"], run["run_dir"], "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[1, 2]\n{"round": 0}\n', "line 1 is not a JSON record (an object {...}), got '[1, 2]'"),
        (b'\xff{"round": 0}\n', "metrics.jsonl' is not UTF-8 text"),
    ],
)
def test_plot_of_foreign_metrics_is_one_line(tmp_path, capsys, text, needle):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_plot_skips_records_a_crash_left_without_a_value(tmp_path):
    rows = [{"round": 0, "test_accuracy": 0.5, "test_loss": 1.0, "train_loss": 1.2},
            {"round": 1, "test_accuracy": 0.6}]  # no test_loss (was a KeyError)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "c.png")]) == 0


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shieldwall", *args, "--log-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data_args.dataset=mnist", "data_args.data_cache_dir=/nonexistent/folder"],
         ["mnist", "/nonexistent/folder", "data_cache_dir"]),
        (["model_args.model=resnet999"], ["unknown model 'resnet999'"]),
        (["defense_args.defense_type=krumm"], ["unknown aggregator 'krumm'", "krum"]),
        (["attack_args.byzantine_client_num=10"],
         ["krum", "f=10", "attack_args.byzantine_client_num"]),
        (["train_args.comm_rnd=3"], ["train_args.comm_rnd", "train_args.comm_round"]),
        (["device_args.device=gpu7"], ["device_args.device: unknown device 'gpu7'", "cpu"]),
        (["device_args.device=cuda:99"], ["device_args.device: device 'cuda:99'"]),
        (["device_args.num_threads=-1"], ["device_args.num_threads must be >= 0"]),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path, overrides, expected):
    args = ["run", str(QUICKSTART)]
    for o in overrides:
        args += ["--set", o]
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("shieldwall: error")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in errors[0]


def test_output_into_a_closed_pipe_is_no_traceback():
    """``shieldwall check CONFIG | head -1``: the reader leaves before the output is written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shieldwall", "check", "--cf", str(QUICKSTART)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    proc.stdout.close()  # nothing will read what the command prints
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err  # 128 + SIGPIPE, as a shell tool reports
    assert err == ""


@pytest.mark.slow
def test_shared_fedml_krum_mnist_config(tmp_path, shared_configs, shared_datasets):
    """The seed FedML config, unchanged but for the data path (about 3 minutes).

    Measured: Krum 78.5%, defense off 72.1%; plain FedAvg without any attack reaches only 83.8%
    in these 10 rounds of LR on a Dirichlet(0.5) split of 5 clients, and Krum keeps one
    client's model per round (as in the paper and FedML's KrumDefense).
    """
    def run(*extra: str) -> float:
        proc = _cli(tmp_path, "run", str(shared_configs / "fedml_mpi_krum_mnist_lr.yaml"),
                    "--set", f"data_args.data_cache_dir={shared_datasets}",
                    "--set", "device_args.num_threads=1", *extra)
        assert proc.returncode == 0, proc.stderr
        return float(proc.stdout.split("final test accuracy:")[1].split("%")[0])

    krum = run()
    undefended = run("--set", "defense_args.enable_defense=false")
    assert krum >= 75.0
    assert krum >= undefended + 3.0
