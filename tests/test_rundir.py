"""Runs, files and configs: a run is never overwritten or written by two processes, resuming
records what changed, bad parameters and damaged files are one line (docs/reliability.md)."""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from shieldwall.cli import main
from shieldwall.config import ConfigError, config_from_dict, load_config
from shieldwall.rundir import RunDirError, claim_run_dir, load_run_config, release_run_dir
from shieldwall.train import train

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def write_config(tmp: Path, **sections) -> Path:
    raw = {
        "data_args": {"dataset": "digits", "partition_method": "iid"},
        "model_args": {"model": "lr"},
        "train_args": {"federated_optimizer": "FedAvg", "client_num_in_total": 4,
                       "comm_round": 2, "batch_size": 16, "learning_rate": 0.05},
        "device_args": {"num_threads": 1},
        "tracking_args": {"log_file_dir": str(tmp / "runs"), "enable_tensorboard": False},
    }
    for section, body in sections.items():
        raw.setdefault(section, {}).update(body)
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    """``shieldwall ARGS`` through the CLI's own entry (:func:`shieldwall.cli.main`) in this
    process: the same parsing, errors and exit codes as the console script, without paying a
    torch import per call. Tests about processes (locks, networked peers) spawn real ones."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["shieldwall", *args], code, out.getvalue(),
                                       err.getvalue())


def cli_process(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m shieldwall ARGS`` as a real process (its console is a pipe, not a tty)."""
    return subprocess.run([sys.executable, "-m", "shieldwall", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=ENV)


def one_error(proc: subprocess.CompletedProcess, code: int = 2, prefix: str = "error") -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("shieldwall: ")]
    assert len(lines) == 1 and lines[0].startswith(f"shieldwall: {prefix}"), proc.stderr
    return lines[0]


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()
            and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 2-round run made by the CLI (shared by the tests that only read it or copy it)."""
    tmp = tmp_path_factory.mktemp("finished")
    proc = cli("run", str(write_config(tmp)), "--run-name", "a")
    assert proc.returncode == 0, proc.stderr
    return tmp / "runs" / "a"


def copy_run(run: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in run.iterdir():
        if p.is_file() and p.name != ".lock":
            (dest / p.name).write_bytes(p.read_bytes())
    return dest


# ------------------------------------------------------------------ item 3: never overwrite
def test_run_name_of_an_existing_run_is_refused(finished_run):
    before = snapshot(finished_run)
    cfg = finished_run.parent.parent / "cfg.yaml"
    line = one_error(cli("run", str(cfg), "--run-name", "a"))
    assert str(finished_run) in line and "--resume" in line and "--run-name" in line
    assert snapshot(finished_run) == before  # metrics, parameters, summary untouched


@pytest.mark.parametrize(("flags", "key"), [
    (["--log-dir", "{f}"], "tracking_args.log_file_dir (--log-dir)"),
    (["--log-dir", "{f}/below"], "tracking_args.log_file_dir (--log-dir)"),
    (["--log-dir", "{d}", "--run-name", "taken"], "tracking_args.run_name (--run-name)"),
])
def test_a_file_where_the_run_folder_goes_is_one_line_naming_the_key(tmp_path, flags, key):
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "taken").write_text("keep me too")
    flags = [f.format(f=tmp_path / "a_file", d=tmp_path / "d") for f in flags]
    line = one_error(cli("run", str(write_config(tmp_path)), *flags))
    assert key in line and "is a file, not a folder" in line
    assert (tmp_path / "a_file").read_text() == "keep me"
    assert (tmp_path / "d" / "taken").read_text() == "keep me too"


def test_more_clients_than_samples_names_the_keys(tmp_path):
    cfg = write_config(tmp_path, train_args={"client_num_in_total": 5000,
                                             "client_num_per_round": 4})
    line = one_error(cli("run", str(cfg)))
    assert "train_args.client_num_in_total = 5000" in line
    assert "data_args.partition_method 'iid'" in line and "more clients (5000)" in line


def test_generated_run_names_never_collide(tmp_path, monkeypatch):
    import datetime as dt

    import shieldwall.rundir.directory as directory

    class Frozen(dt.datetime):  # every run starts in the same second
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(directory, "datetime", Frozen)
    cfg = config_from_dict(yaml.safe_load(write_config(tmp_path).read_text()), name="same")
    first, second = train(cfg), train(cfg)
    assert Path(first["run_dir"]).name == "same-20260102-030405"
    assert Path(second["run_dir"]).name == "same-20260102-030405-2"
    assert all((Path(s["run_dir"]) / "summary.json").is_file() for s in (first, second))


# --------------------------------------------------------- item 4: resume of a finished run
def test_summary_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from shieldwall.rundir import write_text_atomic

    path = tmp_path / "summary.json"
    path.write_text("old\n")

    def full_disk(self: Path, text: str, *args: object, **kwargs: object) -> int:
        with self.open("w") as fh:
            fh.write(text[:3])
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        write_text_atomic(path, '{"final_test_accuracy": 0.9}\n')
    assert path.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [path]


def test_resume_of_a_finished_run_rewrites_nothing(finished_run, caplog):
    caplog.set_level(logging.INFO)
    before = snapshot(finished_run)
    proc = cli("run", "--resume", str(finished_run))
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in caplog.text and "final test accuracy: " in proc.stdout
    assert "n/a" not in proc.stdout
    assert snapshot(finished_run) == before
    summary = yaml.safe_load(before["summary.json"])
    assert summary["final_test_accuracy"] > 0.8


def test_server_resume_of_a_finished_run_rewrites_nothing(finished_run, caplog):
    pytest.importorskip("grpc", reason="the networked mode needs the 'net' extra")
    caplog.set_level(logging.INFO)
    before = snapshot(finished_run)
    proc = cli("server", "--resume", str(finished_run), "--port", "0")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in caplog.text
    assert snapshot(finished_run) == before


def test_btard_resume_of_a_finished_run_rewrites_nothing(tmp_path):
    raw = yaml.safe_load(write_config(tmp_path, train_args={
        "federated_optimizer": "BTARD", "client_num_in_total": 4, "learning_rate": 0.1},
        tracking_args={"run_name": "btard"}, btard_args={"signature": "hmac"}).read_text())
    first = train(config_from_dict(raw))
    run = Path(first["run_dir"])
    before = snapshot(run)
    again = train(config_from_dict(raw), resume=run)
    assert snapshot(run) == before
    assert again["final_test_accuracy"] == first["final_test_accuracy"] is not None


def _one_round_btard_run(tmp_path: Path) -> tuple[dict, Path]:
    """A finished one-round BTARD run (HMAC: in-process) and its raw config."""
    raw = yaml.safe_load(write_config(tmp_path, train_args={
        "federated_optimizer": "BTARD", "client_num_in_total": 4, "learning_rate": 0.1,
        "comm_round": 1}, tracking_args={"run_name": "btard"},
        btard_args={"signature": "hmac"}).read_text())
    return raw, Path(train(config_from_dict(raw))["run_dir"])


def test_btard_corrupt_checkpoint_is_one_error_naming_it(tmp_path):
    raw, run = _one_round_btard_run(tmp_path)
    ckpt = run / "btard_checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated
    raw["train_args"]["comm_round"] = 2
    with pytest.raises(ValueError, match="btard_checkpoint.pt' cannot be read"):
        train(config_from_dict(raw), resume=run)


def test_btard_model_change_even_forced_is_one_line(tmp_path):
    _, run = _one_round_btard_run(tmp_path)
    line = one_error(cli("run", "--resume", str(run), "--force", "--set", "model_args.model=mlp",
                         "--set", "train_args.comm_round=2"))
    assert "model cannot change" in line and str(run) in line
    assert not (run / "config_changes.yaml").exists()  # nothing recorded for a refused resume


# ------------------------------------------------------- item 5: changes recorded per round
def test_resume_set_records_changes_and_keeps_the_config(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    config_before = (run / "config.yaml").read_bytes()
    proc = cli("run", "--resume", str(run), "--set", "train_args.comm_round=3",
               "--set", "train_args.learning_rate=0.01")
    assert proc.returncode == 0, proc.stderr
    assert (run / "config.yaml").read_bytes() == config_before  # round 0's config stays
    changes = yaml.safe_load((run / "config_changes.yaml").read_text())
    assert {c["key"]: (c["round"], c["old"], c["new"], c["kind"]) for c in changes} == {
        "train_args.comm_round": (2, 2, 3, "operational"),
        "train_args.learning_rate": (2, 0.05, 0.01, "training"),
    }
    recs = [yaml.safe_load(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in recs] == [0, 1, 2]
    assert "config_changes" not in recs[1] and len(recs[2]["config_changes"]) == 2
    # the run's current config is the recorded one plus its changes
    current = load_run_config(run, ["train_args.comm_round=4"])
    assert current.train_args.learning_rate == 0.01 and current.train_args.comm_round == 4

    # a change that makes it another experiment is refused, naming the key and --force
    line = one_error(cli("run", "--resume", str(run), "--set", "train_args.comm_round=4",
                         "--set", "common_args.random_seed=7"))
    assert "common_args.random_seed" in line and "--force" in line and "seed" in line
    assert len(yaml.safe_load((run / "config_changes.yaml").read_text())) == 2
    proc = cli("run", "--resume", str(run), "--force", "--set", "train_args.comm_round=4",
               "--set", "common_args.random_seed=7")
    assert proc.returncode == 0, proc.stderr
    forced = [c for c in yaml.safe_load((run / "config_changes.yaml").read_text())
              if c["key"] == "common_args.random_seed"]
    assert forced == [{"round": 3, "key": "common_args.random_seed", "old": 0, "new": 7,
                       "kind": "structural", "forced": True}]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"- {round: 2\n", "the run's config changes '{path}' is not valid YAML: line 2"),
        (b"- a\n", "'{path}' change 1 is not a {{round: R, key: section.key"),
        (b"- {round: x, changes: 5}\n", "'{path}' change 1 is not a {{round: R"),
        (b"\xff\n", "the run's config changes '{path}' is not UTF-8 text"),
    ],
)
def test_corrupt_config_changes_is_one_line_naming_it(finished_run, tmp_path, text, needle):
    run = copy_run(finished_run, tmp_path / "run")
    path = run / "config_changes.yaml"
    path.write_bytes(text)
    line = one_error(cli("run", "--resume", str(run), "--set", "train_args.comm_round=3"))
    assert needle.format(path=path) in line


def test_changed_learning_rate_takes_effect_on_resume(tmp_path):
    """PS-SGD's server optimizer keeps its momentum from the checkpoint, not its old lr."""
    raw = yaml.safe_load(write_config(
        tmp_path, train_args={"federated_optimizer": "PS-SGD", "momentum": 0.9}).read_text())
    half = train(config_from_dict(raw))
    runs = {}
    for lr in (0.05, 0.5):
        run = copy_run(Path(half["run_dir"]), tmp_path / f"lr{lr}")
        raw["train_args"].update(comm_round=4, learning_rate=lr)
        runs[lr] = train(config_from_dict(raw), resume=run)
    full = train(config_from_dict(dict(raw, train_args={**raw["train_args"],
                                                        "learning_rate": 0.05})))
    params = {k: torch.load(Path(v["run_dir"]) / "final_params.pt") for k, v in runs.items()}
    assert torch.equal(params[0.05], torch.load(Path(full["run_dir"]) / "final_params.pt"))
    assert not torch.allclose(params[0.05], params[0.5])


@pytest.mark.parametrize("warmup", [1, 3])
def test_resumed_mimic_keeps_its_memory(tmp_path, caplog, warmup):
    """Mimic's running statistics and target are checkpointed: stopping after round 1 and
    resuming gives the uninterrupted run's parameters bit for bit."""
    raw = yaml.safe_load(write_config(
        tmp_path,
        data_args={"partition_method": "sorted"},
        train_args={"federated_optimizer": "PS-SGD", "client_num_in_total": 6,
                    "comm_round": 1, "checkpoint_frequency": 1},
        attack_args={"enable_attack": True, "byzantine_client_num": 2, "attack_type": "mimic",
                     "warmup": warmup, "knowledge": "honest"},
        defense_args={"defense_type": "median"},
    ).read_text())
    half = train(config_from_dict(raw))
    memory = torch.load(Path(half["run_dir"]) / "checkpoint.pt", weights_only=False)["attack"]
    assert memory["memory"]["mimic"]["t"] == 1
    raw["train_args"]["comm_round"] = 5
    again = copy_run(Path(half["run_dir"]), tmp_path / "again")
    resumed = train(config_from_dict(raw), resume=half["run_dir"])
    full = train(config_from_dict(raw))
    assert torch.equal(torch.load(Path(resumed["run_dir"]) / "final_params.pt"),
                       torch.load(Path(full["run_dir"]) / "final_params.pt"))
    # another attack on resume starts with no memory: its first round learns afresh
    raw["attack_args"]["warmup"] = warmup + 1
    with caplog.at_level(logging.INFO, logger="shieldwall.rundir"):
        train(config_from_dict(raw), resume=again, force=True)
    assert "the attack changed: it starts with fresh state at round 1" in caplog.text
    memory = torch.load(again / "checkpoint.pt", weights_only=False)["attack"]
    assert memory["memory"]["mimic"]["t"] == 4  # rounds 1-4 after the change


def test_model_change_even_forced_is_one_line(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["train_args"]["comm_round"] = 3
    raw["model_args"]["model"] = "mlp"
    with pytest.raises(ConfigError, match="model cannot change"):
        train(config_from_dict(raw), resume=run, force=True)


# ------------------------------------------------------------------- item 6: one writer
def test_a_live_run_directory_cannot_be_written_twice(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from shieldwall.rundir import claim_run_dir; "
         "claim_run_dir(sys.argv[1]); print('held', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = one_error(cli("run", "--resume", str(run), "--set", "train_args.comm_round=3"))
        assert f"process {holder.pid}" in line and str(run) in line
        with pytest.raises(RunDirError, match=f"process {holder.pid}"):
            claim_run_dir(run)
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: its lock file stays
        holder.wait()
    assert (run / ".lock").read_text().strip() == str(holder.pid)
    proc = cli("run", "--resume", str(run), "--set", "train_args.comm_round=3")
    assert proc.returncode == 0, proc.stderr  # a stale lock never blocks
    claim_run_dir(run)  # and this process can take it once that run ended
    release_run_dir(run)


# ---------------------------------------------------------------- item 7: parameter types
@pytest.mark.parametrize(("sets", "expected"), [
    (["defense_args.enable_defense=true", "defense_args.defense_type=multikrum",
      "defense_args.m=five"], ["defense_args.m", "'multikrum'", "'five'", "integer"]),
    (["attack_args.enable_attack=true", "attack_args.attack_type=sign_flip",
      "attack_args.byzantine_client_num=1", "attack_args.scale=abc"],
     ["attack_args.scale", "'sign_flip'", "'abc'", "number"]),
    (["defense_args.enable_defense=true", "defense_args.defense_type=median",
      "defense_args.preaggregators=[{clipping: {c: .nan}}]"],
     ["preaggregators.clipping.c", "'clipping'", "finite"]),
])
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_parameter_values_are_one_line(tmp_path, command, sets, expected):
    args = [command, str(write_config(tmp_path))]
    for s in sets:
        args += ["--set", s]
    line = one_error(cli(*args))
    for text in expected:
        assert text in line, line


def test_numeric_strings_are_numbers(tmp_path):
    """YAML 1.1 reads 1e11 as a string: it is accepted as the number it spells."""
    path = tmp_path / "huge.yaml"
    path.write_text(write_config(tmp_path).read_text() + (
        "attack_args: {enable_attack: true, attack_type: huge, byzantine_client_num: 1, "
        "norm: 1e11}\n"))
    assert yaml.safe_load(path.read_text())["attack_args"]["norm"] == "1e11"
    from shieldwall.algorithms.adversary import plan_attack
    from shieldwall.commands.check import check_config

    cfg = load_config(path)
    assert plan_attack(cfg).params["norm"] == 1e11
    assert check_config(cfg).problems == []


def _numeric_params():
    import inspect
    import types
    import typing

    from shieldwall.aggregators import AGGREGATORS
    from shieldwall.algorithms.params import user_params
    from shieldwall.attacks import ATTACKS
    from shieldwall.postaggregators import POSTAGGREGATORS
    from shieldwall.preaggregators import PREAGGREGATORS

    for registry in (AGGREGATORS, PREAGGREGATORS, POSTAGGREGATORS, ATTACKS):
        for entry in registry:
            hints = typing.get_type_hints(entry.obj)
            for name in user_params(entry):
                hint = hints.get(name)
                union = typing.get_origin(hint) in (typing.Union, types.UnionType)
                kinds = (set(typing.get_args(hint)) if union else set()) | {hint}
                if kinds & {int, float} and str not in kinds:
                    default = inspect.signature(entry.obj).parameters[name].default
                    yield pytest.param(entry, name, default, id=f"{entry.name}.{name}")


@pytest.mark.parametrize(("entry", "name", "default"), list(_numeric_params()))
def test_every_numeric_parameter_is_checked(entry, name, default):
    from shieldwall.algorithms.params import convert_params

    with pytest.raises(ConfigError) as err:
        convert_params(entry, {name: "abc"}, "x")
    assert f"x.{name}" in str(err.value) and repr(entry.name) in str(err.value)
    assert "'abc'" in str(err.value)
    with pytest.raises(ConfigError, match="finite|integer"):
        convert_params(entry, {name: float("nan")}, "x")
    assert convert_params(entry, {name: "3"}, "x")[name] == 3


# --------------------------------------------------------------- item 8: YAML's booleans
def test_yaml_booleans_for_on_off_values(tmp_path):
    path = tmp_path / "b.yaml"
    for text, expected in (("off", "off"), ("on", "on"), ("no", "off"), ("'auto'", "auto")):
        path.write_text(f"device_args:\n  batched: {text}\n")
        assert load_config(path).device_args.batched == expected
    path.write_text("tracking_args:\n  enable_tensorboard: 'off'\n  progress_bar: 'on'\n")
    cfg = load_config(path)
    assert cfg.tracking_args.enable_tensorboard is False and cfg.tracking_args.progress_bar
    line = one_error(cli("check", str(write_config(tmp_path)), "--set", "device_args.batched=off",
                         "--set", "device_args.max_clients_per_chunk=maybe"))
    assert "max_clients_per_chunk" in line  # batched: off passed; the next key is checked


# ----------------------------------------------- item 9: bad numbers and damaged files
@pytest.mark.parametrize("value", ["nan", ".inf", "-.inf", ".nan"])
def test_non_finite_learning_rate_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="train_args.learning_rate must be a finite number"):
        load_config(write_config(tmp_path), [f"train_args.learning_rate={value}"])


def test_non_finite_learning_rate_cli(tmp_path):
    line = one_error(cli("run", str(write_config(tmp_path)),
                         "--set", "train_args.learning_rate=.inf"))
    assert "train_args.learning_rate" in line and "finite" in line


def _idx(path: Path, arr: torch.Tensor, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.to(torch.uint8).numpy().tobytes()))


def test_unwritable_log_dir_is_one_line(tmp_path):
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("x")
    line = one_error(cli("run", str(write_config(tmp_path)), "--log-dir", str(not_a_dir)))
    assert str(not_a_dir) in line


def test_full_disk_is_one_line(tmp_path, monkeypatch):
    import errno

    import shieldwall.rundir.loop

    def full_disk(run_dir: Path, cfg: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "config.yaml"))

    monkeypatch.setattr(shieldwall.rundir.loop, "record_config", full_disk)
    line = one_error(cli("run", str(write_config(tmp_path))))
    assert "No space left on device" in line and "config.yaml" in line


def test_truncated_gz_data_file_is_one_line(tmp_path):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        _idx(folder / f"{prefix}-images-idx3-ubyte.gz",
             torch.randint(0, 255, (n, 28, 28), generator=g), 0x0803)
        _idx(folder / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n) % 10, 0x0801)
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    line = one_error(cli("run", str(write_config(tmp_path)), "--set", "data_args.dataset=mnist",
                         "--set", f"data_args.data_cache_dir={tmp_path / 'data'}"))
    assert str(bad) in line and "damaged gzip" in line


def test_corrupt_checkpoint_is_one_line(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    line = one_error(cli("run", "--resume", str(run), "--set", "train_args.comm_round=3"))
    assert str(ckpt) in line and "cannot be read" in line


class _Planted:
    """Unpickling this runs ``Path.touch`` on its path: code a crafted checkpoint would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_none(finished_run, tmp_path):
    """A run directory handed over by someone else: resuming it must not unpickle objects."""
    run = copy_run(finished_run, tmp_path / "run")
    ckpt, planted = run / "checkpoint.pt", tmp_path / "code-ran"
    state = torch.load(ckpt, weights_only=True)  # a checkpoint we write is tensors and data
    state["algorithm"]["extra"] = _Planted(planted)
    torch.save(state, ckpt)
    line = one_error(cli("run", "--resume", str(run), "--set", "train_args.comm_round=3"))
    assert str(ckpt) in line and "Path.touch" not in line and "pickled" in line
    assert not planted.exists()


def test_btard_checkpoint_that_would_run_code_is_refused_and_runs_none(tmp_path):
    raw, run = _one_round_btard_run(tmp_path)
    ckpt, planted = run / "btard_checkpoint.pt", tmp_path / "code-ran"
    state = torch.load(ckpt, weights_only=True)
    state["ledger"] = _Planted(planted)
    torch.save(state, ckpt)
    raw["train_args"]["comm_round"] = 2
    with pytest.raises(ValueError, match="btard_checkpoint.pt' cannot be read.*pickled"):
        train(config_from_dict(raw), resume=run)
    assert not planted.exists()


def test_checkpoints_from_before_plain_rng_state_still_resume(finished_run, tmp_path):
    """Checkpoints that stored NumPy's RNG state as an ndarray tuple resume exactly as before."""
    run = copy_run(finished_run, tmp_path / "run")
    ckpt = run / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    np.random.seed(7)
    legacy = np.random.get_state()
    state["rng"]["numpy"] = legacy
    torch.save(state, ckpt)
    np.random.seed(0)
    from shieldwall.checkpoint import load_checkpoint

    load_checkpoint(run)
    assert np.random.get_state()[2] == legacy[2]
    assert (np.random.get_state()[1] == legacy[1]).all()
    proc = cli("run", "--resume", str(run), "--set", "train_args.comm_round=3")
    assert proc.returncode == 0, proc.stderr


def test_torn_last_metrics_line_is_left_out_on_resume(finished_run, tmp_path):
    """A crash or a full disk in the middle of an append leaves half a line: resume goes on."""
    run = copy_run(finished_run, tmp_path / "run")
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"round": 2, "train_lo')
    proc = cli("run", "--resume", str(run), "--set", "train_args.comm_round=3")
    assert proc.returncode == 0, proc.stderr
    rounds = [json.loads(x)["round"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [0, 1, 2]


def test_bad_metrics_line_inside_the_file_is_one_line(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(["{oops", *lines]) + "\n")
    line = one_error(cli("run", "--resume", str(run), "--set", "train_args.comm_round=3"))
    assert str(run / "metrics.jsonl") in line and "line 1" in line


def test_metrics_rewrite_on_resume_loses_nothing_on_a_full_disk(finished_run, tmp_path,
                                                                monkeypatch):
    from shieldwall.metrics import MetricsLogger

    run = copy_run(finished_run, tmp_path / "run")
    before = (run / "metrics.jsonl").read_bytes()
    with MetricsLogger(run, total_rounds=3, start_round=2, tensorboard=False, progress=False):
        pass  # nothing after the checkpoint to drop: the file is not rewritten
    assert (run / "metrics.jsonl").read_bytes() == before

    def full_disk(self: Path, text: str, *args: object, **kwargs: object) -> int:
        with self.open("w") as fh:
            fh.write(text[: len(text) // 3])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        MetricsLogger(run, total_rounds=3, start_round=1, tensorboard=False, progress=False)
    assert (run / "metrics.jsonl").read_bytes() == before  # every finished round is still there
    assert not list(run.glob("*.tmp"))  # the temporary file is gone too


def test_round_without_a_usable_row_stops_with_one_line(tmp_path):
    """Every client's row rejected (here all NaN) ends the run with one line, exit 1."""
    cfg = write_config(tmp_path, attack_args={"enable_attack": True, "attack_type": "nan",
                                              "byzantine_client_num": 4})
    line = one_error(cli("run", str(cfg)), code=1, prefix="stopped")
    assert "round 0: no client's update could be used" in line and "--resume" in line


def test_run_stopped_in_round_0_resumes_from_round_0(tmp_path):
    """No checkpoint yet and no round recorded: --resume (as the stop line says) starts over in
    the same directory instead of failing on the missing checkpoint."""
    cfg = write_config(tmp_path, attack_args={"enable_attack": True, "attack_type": "nan",
                                              "byzantine_client_num": 4})
    one_error(cli("run", str(cfg), "--run-name", "r"), code=1, prefix="stopped")
    run = tmp_path / "runs" / "r"
    proc = cli("run", "--resume", str(run), "--set", "attack_args.enable_attack=false")
    assert proc.returncode == 0, proc.stderr
    assert [r["round"] for r in map(yaml.safe_load, (run / "metrics.jsonl").read_text()
                                    .splitlines())] == [0, 1]
    assert yaml.safe_load((run / "config.yaml").read_text())["attack_args"]["enable_attack"]


def test_resume_without_checkpoint_but_with_rounds_is_still_refused(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    for name in ("checkpoint.pt", "summary.json", "final_params.pt"):
        (run / name).unlink()
    before = snapshot(run)
    line = one_error(cli("run", "--resume", str(run), "--set", "train_args.comm_round=3"))
    assert "no checkpoint to resume from" in line
    assert snapshot(run) == before  # its recorded rounds are kept


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_server_whose_clients_all_died_ends_with_one_line(tmp_path):
    """Real server and clients; both clients are killed (-9) after round 0 (about 40 s: the
    server waits ``round_timeout`` for the dead before it stops)."""
    pytest.importorskip("grpc", reason="the networked mode needs the 'net' extra")
    cfg = write_config(
        tmp_path,
        train_args={"client_id_list": [1, 2], "client_num_in_total": 2, "comm_round": 200},
        comm_args={"server_port": _free_port(), "join_timeout": 60, "round_timeout": 20,
                   "reconnect_timeout": 120},
        tracking_args={"run_name": "net"})
    server = subprocess.Popen([sys.executable, "-m", "shieldwall", "server", str(cfg)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, env=ENV)
    clients = [subprocess.Popen([sys.executable, "-m", "shieldwall", "client", str(cfg),
                                 "--rank", str(k)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=REPO, env=ENV) for k in (1, 2)]
    try:
        metrics = tmp_path / "runs" / "net" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None and not (
                metrics.is_file() and metrics.read_text().strip()):
            time.sleep(0.2)
        assert server.poll() is None and metrics.read_text().strip(), "no round 0"
        for c in clients:
            c.send_signal(signal.SIGKILL)
        _, err = server.communicate(timeout=120)
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
            p.wait()
    proc = subprocess.CompletedProcess(server.args, server.returncode, "", err)
    line = one_error(proc, code=1, prefix="stopped")
    assert "no client's update could be used" in line and "absent" in line


# ---------------------------------------------- item 11: the console, without a terminal
def test_console_names_rejected_rows_and_prints_one_line_per_round(tmp_path):
    cfg = write_config(tmp_path, attack_args={"enable_attack": True, "attack_type": "nan",
                                              "byzantine_client_num": 1})
    proc = cli_process("run", str(cfg))  # stdout and stderr are pipes, not a terminal
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stderr.splitlines() if ": round " in line
                and "train loss" in line]
    assert [line.split(": round ")[1].split(":")[0] for line in progress] == ["1/2", "2/2"]
    assert "test acc" in progress[-1]
    rejected = [line for line in proc.stderr.splitlines() if "rejected 1 row(s)" in line]
    assert len(rejected) == 2 and all("non-finite" in line for line in rejected)


def test_interrupted_matrix_cell_continues_or_restarts(tmp_path):
    from shieldwall.matrix import _run_cell

    raw = yaml.safe_load(write_config(tmp_path).read_text())
    raw["tracking_args"].update(run_name="cell")
    cell = tmp_path / "runs" / "cell"
    first = _run_cell(raw)  # 2 rounds, then "interrupted": the matrix wants 3
    raw["train_args"]["comm_round"] = 3
    (cell / "summary.json").unlink()
    resumed = _run_cell(raw)
    assert resumed["run_dir"] == first["run_dir"]
    assert [yaml.safe_load(x)["round"] for x in (cell / "metrics.jsonl").read_text().split("\n")
            if x] == [0, 1, 2]
    (cell / "checkpoint.pt").unlink()  # cut off before any checkpoint: run again from scratch
    again = _run_cell(raw)
    assert again["rounds"] == 3 and (cell / "checkpoint.pt").is_file()


def test_interrupted_btard_matrix_cell_continues(tmp_path):
    """A BTARD cell checkpoints to btard_checkpoint.pt: it continues, it is not deleted."""
    from shieldwall.matrix import _run_cell

    raw = yaml.safe_load(write_config(tmp_path, train_args={
        "federated_optimizer": "BTARD", "client_num_in_total": 4, "learning_rate": 0.1},
        tracking_args={"run_name": "cell"}, btard_args={"signature": "hmac"}).read_text())
    cell = tmp_path / "runs" / "cell"
    _run_cell(raw)  # 2 steps, then "interrupted": the matrix wants 3
    (cell / "summary.json").unlink()
    (cell / "note.txt").write_text("kept")
    raw["train_args"]["comm_round"] = 3
    assert _run_cell(raw)["rounds"] == 3
    assert (cell / "note.txt").is_file()  # the directory was continued, not deleted
    assert [yaml.safe_load(x)["round"] for x in (cell / "metrics.jsonl").read_text().split("\n")
            if x] == [0, 1, 2]
    assert [c["key"] for c in yaml.safe_load((cell / "config_changes.yaml").read_text())] == [
        "train_args.comm_round"]


def test_btard_attack_parameters_are_typed_too(tmp_path):
    line = one_error(cli("check", str(write_config(tmp_path)),
                         "--set", "train_args.federated_optimizer=BTARD",
                         "--set", "attack_args.enable_attack=true",
                         "--set", "attack_args.attack_type=sign_flip",
                         "--set", "attack_args.byzantine_client_num=1",
                         "--set", "attack_args.scale=abc"))
    assert "attack_args.scale" in line and "'sign_flip'" in line and "'abc'" in line
