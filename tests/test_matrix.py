"""The attack × defense matrix: cells as runs, CSV + heatmap, resume without rerunning."""

from __future__ import annotations

import csv

import pytest

from shieldwall.cli import main
from shieldwall.config import config_from_dict
from shieldwall.matrix import Cell, cell_config


def _base(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(
        "data_args: {dataset: digits}\n"
        "train_args: {federated_optimizer: PS-SGD, client_num_in_total: 9, comm_round: 30,\n"
        "             batch_size: 16, learning_rate: 0.1, momentum: 0.9}\n"
        "validation_args: {frequency_of_the_test: 30}\n"
        "device_args: {num_threads: 1}\n"
        "tracking_args: {enable_tensorboard: false}\n"
        "attack_args: {byzantine_client_num: 2}\n"
    )
    return path


def test_cell_config_replaces_attack_and_defense(tmp_path):
    from shieldwall.config import load_config

    base = load_config(_base(tmp_path))
    raw = cell_config(base, Cell("sign_flip(scale=3)", "bucketing(s=2)+krum(m=2)", 3), tmp_path)
    cfg = config_from_dict(raw)
    assert cfg.attack_args.enable_attack and cfg.attack_args.attack_type == "sign_flip"
    assert cfg.attack_args.params == {"scale": 3}
    assert cfg.defense_args.defense_type == "krum"
    assert cfg.defense_args.params == {"m": 2}
    assert cfg.defense_args.preaggregators == [{"bucketing": {"s": 2}}]
    assert cfg.common_args.random_seed == 3
    raw = cell_config(base, Cell("none", "none", 0), tmp_path)
    cfg = config_from_dict(raw)
    assert not cfg.attack_args.enable_attack and not cfg.defense_args.enable_defense


def test_matrix_command_writes_csv_and_png_and_resumes(tmp_path, capsys):
    out = tmp_path / "m"
    args = ["matrix", str(_base(tmp_path)), "--attacks", "sign_flip(scale=4)",
            "--defenses", "median", "--out", str(out), "--jobs", "2"]
    assert main(args) == 0
    with (out / "matrix.csv").open() as fh:
        rows = {(r["attack"], r["defense"]): float(r["accuracy_mean"]) for r in csv.DictReader(fh)}
    assert set(rows) == {(a, d) for a in ("none", "sign_flip(scale=4)") for d in ("none", "median")}
    assert rows[("none", "none")] > 0.85
    assert rows[("sign_flip(scale=4)", "median")] > 0.85
    assert rows[("sign_flip(scale=4)", "none")] < rows[("sign_flip(scale=4)", "median")] - 0.2
    assert (out / "matrix.png").read_bytes()[:4] == b"\x89PNG"
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/summary.json")}
    assert len(stamps) == 4
    assert main(args) == 0  # every cell is finished: nothing runs again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_matrix_rejects_bad_names_before_running(tmp_path):
    with pytest.raises(ValueError, match="unknown aggregator 'krumm'"):
        main(["--debug", "matrix", str(_base(tmp_path)), "--attacks", "sign_flip",
              "--defenses", "krumm", "--out", str(tmp_path / "x")])


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--attacks", "alie(z=[)", "--defenses", "median"], "'alie' parameter z='['"),
        (["--attacks", "alie", "--defenses", "median", "--axis", "train_args.comm_round=[,2"],
         "train_args.comm_round must be an integer, got '['"),
        (["--attacks", "alie", "--defenses", "median", "--jobs", "0"], "--jobs must be >= 1"),
        (["--attacks", "alie", "--defenses", "median", "--seeds", "0"], "--seeds must be >= 1"),
        (["--attacks", "alie", "--defenses", "median", "--cpus-per-cell", "-1"],
         "--cpus-per-cell must be >= 0"),
    ],
)
def test_matrix_values_that_are_not_yaml_are_one_line(tmp_path, capsys, flags, expected):
    assert main(["matrix", str(_base(tmp_path)), *flags, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert expected in err


def test_torn_summary_is_not_a_finished_cell(tmp_path):
    """A summary.json cut short (a crash, a full disk) makes the cell run again (it resumes from
    its checkpoint), not the whole matrix stop with a YAML traceback."""
    from shieldwall.matrix import _finished

    cell = Cell("none", "none", 0)
    path = tmp_path / "cells" / cell.name / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_text('{\n  "run_dir": "x",\n  "rounds": 2,\n  "final_test_acc')
    assert _finished(tmp_path, cell) is None
    path.write_text('{"rounds": 2, "final_test_accuracy": 0.9}\n')
    assert _finished(tmp_path, cell) == {"rounds": 2, "final_test_accuracy": 0.9}


def test_rerun_with_another_config_is_refused(tmp_path):
    """Cells already run with another config are not reused as if they were this one's."""
    from shieldwall.config import load_config
    from shieldwall.matrix import _run_cell, run_cells

    base = load_config(_base(tmp_path), ["train_args.comm_round=2"])
    cell = Cell("none", "none", 0)
    _run_cell(cell_config(base, cell, tmp_path / "m"))  # a finished cell
    done = {cell: pytest.approx(0.5, abs=0.5)}
    assert run_cells(base, [cell], tmp_path / "m", jobs=1) == done  # same config: reused
    changed = load_config(_base(tmp_path), ["train_args.comm_round=2",
                                            "train_args.learning_rate=0.5"])
    with pytest.raises(ValueError, match="train_args.learning_rate 0.1 -> 0.5"):
        run_cells(changed, [cell], tmp_path / "m", jobs=1)
