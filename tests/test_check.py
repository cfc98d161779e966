"""``shieldwall check``: the resolved plan with every value's origin, one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shieldwall.cli import main

SHARED_CONFIGS = ["fedml_mpi_krum_mnist_lr.yaml", "fedml_hierarchical_cross_silo_mnist_lr.yaml"]


def write(tmp_path: Path, raw: dict, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run_check(capsys, *args: str) -> tuple[int, str, list[str]]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("shieldwall: error:")]
    return code, out, errors


@pytest.mark.parametrize("name", SHARED_CONFIGS)
def test_shared_configs_pass(capsys, shared_configs, shared_datasets, name):
    code, out, errors = run_check(capsys, str(shared_configs / name),
                                  "--set", f"data_args.data_cache_dir={shared_datasets}")
    assert (code, errors) == (0, [])
    assert "OK: the config would run" in out
    assert "data_args.data_cache_dir (--set)" in out
    assert "mnist" in out and "FedAvg [train_args.federated_optimizer (file)]" in out


def test_shared_krum_config_plan(capsys, shared_configs, shared_datasets):
    code, out, _ = run_check(capsys, str(shared_configs / "fedml_mpi_krum_mnist_lr.yaml"),
                             "--set", f"data_args.data_cache_dir={shared_datasets}",
                             "--set", "train_args.comm_round=3")
    assert code == 0
    assert "3 rounds [train_args.comm_round (--set)]" in out
    assert ("random (FedML byzantine/random) by 1 Byzantine client(s) "
            "[attack_args.byzantine_client_num (file)]") in out
    assert "f = 1 [attack_args.byzantine_client_num (file)]" in out
    assert "krum (FedML krum)" in out


def test_missing_data_folder_is_a_problem(capsys, shared_configs, tmp_path):
    code, _, errors = run_check(capsys, str(shared_configs / "fedml_mpi_krum_mnist_lr.yaml"),
                                "--set", f"data_args.data_cache_dir={tmp_path / 'nowhere'}")
    assert code == 2 and len(errors) == 1
    assert "data_args.data_cache_dir" in errors[0] and "does not exist" in errors[0]


def test_misspelled_defense_names_the_closest(capsys, tmp_path):
    raw = {"defense_args": {"enable_defense": True, "defense_type": "foolgold"}}
    code, _, errors = run_check(capsys, write(tmp_path, raw))
    assert code == 2 and len(errors) == 1
    assert "unknown aggregator 'foolgold' (did you mean 'foolsgold'?)" in errors[0]
    raw["defense_args"]["defense_type"] = "3sigma_gep"
    code, _, errors = run_check(capsys, write(tmp_path, raw))
    assert code == 2 and "did you mean '3sigma_geo'?" in errors[0]


def test_several_problems_one_line_each(capsys, tmp_path):
    raw = {
        "data_args": {"dataset": "shakespeare"},
        "model_args": {"model": "rnn"},
        "attack_args": {"enable_attack": True, "attack_type": "dlg"},
        "defense_args": {"enable_defense": True, "defense_type": "slsgd", "alpha": 2},
    }
    code, _, errors = run_check(capsys, write(tmp_path, raw))
    assert code == 2 and len(errors) == 4
    assert "data set 'shakespeare'" in errors[0] and "not supported" in errors[0]
    assert "model 'rnn'" in errors[1] and "character LSTM" in errors[1]
    assert "'dlg'" in errors[2] and "only observes" in errors[2]
    assert "defense_args.alpha must be in [0, 1], got 2" in errors[3]


def test_plan_lists_every_parameter_with_its_origin(capsys, tmp_path):
    raw = {
        "train_args": {"client_num_in_total": 10},
        "attack_args": {"enable_attack": True, "attack_type": "label_flipping",
                        "ratio_of_poisoned_client": 0.2, "original_class_list": [3],
                        "target_class_list": [8]},
        "defense_args": {"enable_defense": True, "defense_type": "geo_median", "batch_num": 5},
    }
    code, out, errors = run_check(capsys, write(tmp_path, raw),
                                  "--set", "common_args.random_seed=3")
    assert (code, errors) == (0, [])
    assert "label_flip (FedML label_flipping) by 2 Byzantine client(s)" in out
    assert "original_class_list = [3] [attack_args.original_class_list (file)]" in out
    assert "f = 2 [round(0.2 · 10 clients) from attack_args.ratio_of_poisoned_client (file)]" in out
    assert "pre0  pre-aggregation bucketing" in out
    assert "s = ceil(n/5) [defense_args.batch_num (file)]" in out
    assert "nu = 1e-06 [default]" in out


def test_defense_that_cannot_tolerate_f_is_a_problem(capsys, tmp_path):
    raw = {"train_args": {"client_num_in_total": 4},
           "attack_args": {"enable_attack": True, "attack_type": "byzantine",
                           "attack_mode": "zero", "byzantine_client_num": 1},
           "defense_args": {"enable_defense": True, "defense_type": "krum"}}
    code, _, errors = run_check(capsys, write(tmp_path, raw))
    assert code == 2 and len(errors) == 1 and "n >= 2f + 3" in errors[0]


def test_unloadable_config_is_one_line(capsys, tmp_path):
    code = main(["check", write(tmp_path, {"train_args": {"comm_rounds": 3}})])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean train_args.comm_round?" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"train_args: {comm_round: 3\n", "is not valid YAML: line 2, column 1: expected ','"),
        (b"train_args:\n\tcomm_round: 3\n", "line 2, column 1: found character '\\t'"),
        (b"train_args:\n  comm_round: \xff3\n", "is not UTF-8 text (byte 0xff at offset 26)"),
        (None, "is a folder; give a YAML file"),
        (b"#" * (16 << 20) + b"\n", "is larger than 16 MiB"),
    ],
)
def test_unreadable_config_file_is_one_line_naming_it(capsys, tmp_path, text, expected):
    path = tmp_path / "cfg.yaml"
    if text is None:
        path.mkdir()
    else:
        path.write_bytes(text)
    code = main(["check", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"config file {str(path)!r}" in err and expected in err


def test_a_config_from_a_pipe_is_read(capsys, tmp_path):
    """``shieldwall check <(sed ... cfg.yaml)``: the shell hands over a pipe, not a file."""
    import os
    import threading

    pipe = tmp_path / "cfg.fifo"
    os.mkfifo(pipe)

    def feed() -> None:
        with pipe.open("w") as fh:
            fh.write("train_args:\n  comm_round: 7\n")

    writer = threading.Thread(target=feed)
    writer.start()
    code = main(["check", str(pipe)])
    writer.join(timeout=10)
    out = capsys.readouterr().out
    assert code == 0 and "7 rounds [train_args.comm_round (file)]" in out, out


def test_preaggregator_params_that_are_not_a_mapping(capsys, tmp_path):
    raw = {"defense_args": {"enable_defense": True, "defense_type": "median",
                            "preaggregators": [{"bucketing": 2}]}}
    code, _, errors = run_check(capsys, write(tmp_path, raw))
    assert code == 2 and len(errors) == 1
    assert "preaggregators: the parameters of 'bucketing' must be a mapping" in errors[0]


def test_btard_config_plan_and_problem(capsys, tmp_path):
    raw = {"train_args": {"federated_optimizer": "BTARD", "client_num_in_total": 8},
           "attack_args": {"enable_attack": True, "attack_type": "sign_flip",
                           "byzantine_client_num": 3}}
    code, out, errors = run_check(capsys, write(tmp_path, raw))
    assert code == 0 and not errors
    assert "butterfly CenteredClip" in out and "3 Byzantine peer(s)" in out
    raw["attack_args"]["byzantine_client_num"] = 4  # half of the peers: BTARD cannot
    code, _, errors = run_check(capsys, write(tmp_path, raw))
    assert code == 2 and len(errors) == 1 and "fewer than half" in errors[0]


def test_redundancy_config_plan(capsys, tmp_path):
    raw = {"train_args": {"federated_optimizer": "PS-SGD", "client_num_in_total": 15},
           "redundancy_args": {"enable": True, "approach": "mols", "group_size": 3,
                               "worker_fail": 3, "mode": "coord-median"}}
    code, out, errors = run_check(capsys, write(tmp_path, raw))
    assert code == 0 and not errors
    assert "15 workers x 25 files, r = 3" in out and "controls 3 files" in out
    raw["redundancy_args"]["group_size"] = 4  # no MOLS placement for K = 15, r = 4
    code, _, errors = run_check(capsys, write(tmp_path, raw))
    assert code == 2 and len(errors) == 1
