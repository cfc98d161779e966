"""The FedML drop-in's API (``shieldwall.fedml``): flags and args, data set list, model, keys,
semantics and bad input. Real-process runs of FedML's example scripts: test_fedml_examples.py."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import shieldwall.fedml as fedml
from shieldwall.config import config_from_dict, load_config
from shieldwall.config.fedml_keys import CODE_KEYS, SECTION_KEYS
from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import SECTIONS
from shieldwall.fedml._api import UnsupportedAPIError
from shieldwall.fedml.arguments import load_args, parse_flags
from shieldwall.fedml.components import components_from_fedml
from shieldwall.runtime.net.parts import data_silo_selection
from shieldwall.train import build_components, is_test_round


@pytest.fixture
def hier(shared_configs):
    return str(shared_configs / "fedml_hierarchical_cross_silo_mnist_lr.yaml")


@pytest.fixture
def krum(shared_configs):
    return str(shared_configs / "fedml_mpi_krum_mnist_lr.yaml")


def test_init_flags_and_flat_names(hier, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(var, raising=False)
    args = load_args(["--cf", hier, "--rank", "2", "--role", "client", "--run_id", "7",
                      "--some_launcher_flag", "x"])
    assert (args.rank, args.role, args.run_id) == (2, "client", "7")
    assert args.dataset == "mnist" and args.comm_round == 50 and args.batch_size == 10
    assert args.client_num_in_total == 1000 and args.client_id_list == [1, 2]
    assert args.n_proc_per_node == 2 and args.n_proc_in_silo == 2  # silo this client starts
    assert args.proc_rank_in_silo == 0 and args.scenario == "horizontal"
    assert args.gpu_mapping_key == "mapping_default"  # FedML-only key, as written
    assert args.yaml_config_file == hier and args.worker_num == 2


def test_args_changes_reach_the_validated_config(hier):
    args = load_args(["--cf", hier, "--rank", "0"])
    args.comm_round = 3
    args.client_num_in_total = 20
    cfg = args.config()
    assert cfg.train_args.comm_round == 3 and cfg.train_args.client_num_in_total == 20
    args.batch_size = "ten"
    with pytest.raises(ConfigError, match="train_args.batch_size"):
        args.config()


def test_init_needs_cf_and_a_listed_rank(hier):
    with pytest.raises(ConfigError, match="--cf CONFIG"):
        load_args(["--rank", "0"])
    with pytest.raises(ConfigError, match=r"--rank 3 is not a client of .*\[1, 2\]"):
        load_args(["--cf", hier, "--rank", "3"])


def test_every_fedml_key_is_accepted_and_set_works(caplog):
    fields = {s: {f.name for f in dataclasses.fields(c)} for s, c in SECTIONS.items()}
    overrides = [f"{section}.{key}=x" for section, keys in SECTION_KEYS.items()
                 for key in keys if key not in fields.get(section, ())
                 and section not in ("attack_args", "defense_args")]
    overrides += [f"train_args.{key}=x" for key in CODE_KEYS
                  if not any(key in f for f in fields.values())]
    assert len(overrides) > 400
    with caplog.at_level(logging.INFO):
        cfg = config_from_dict({}, overrides)
    assert cfg.sources["common_args.using_mlops"] == "unused"
    named = [r.getMessage() for r in caplog.records if "not used by shieldwall" in r.getMessage()]
    assert len(named) == 1 and "dp_args.epsilon" in named[0]
    config_from_dict({}, ["common_args.using_mlops=true", "defense_args.add_defense=true"])
    with pytest.raises(ConfigError, match="did you mean common_args.using_mlops"):
        config_from_dict({}, ["common_args.using_mlop=true"])


@pytest.mark.parametrize("key,expected", [
    ("tracking_args.enable_wandb=true", "Weights & Biases"),
    ("comm_args.backend=MQTT_S3", "gRPC"),
    ("common_args.using_mlops=true", "no MLOps"),
])
def test_ignored_behaviour_gets_a_warning(caplog, key, expected):
    with caplog.at_level(logging.WARNING):
        config_from_dict({}, [key])
    assert any(expected in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize("key", ["fhe_args.enable_fhe=true", "dp_args.enable_dp=true",
                                 "secure_aggregation_args.enable_sa=true"])
def test_out_of_scope_features_are_refused_in_one_line(key):
    with pytest.raises(ConfigError, match="outside shieldwall's scope"):
        config_from_dict({}, [key])


def test_fedml_semantics_detected(hier, krum):
    for path in (hier, krum):
        cfg = load_config(path)
        assert cfg.common_args.fedml_semantics == "on"
        assert cfg.sources["common_args.fedml_semantics"].startswith("auto: FedML's")
    own = config_from_dict({"common_args": {"training_type": "simulation"}})
    assert own.common_args.fedml_semantics == "off"
    fed = config_from_dict({"comm_args": {"backend": "MPI"},
                            "validation_args": {"frequency_of_the_test": 5},
                            "train_args": {"comm_round": 12}})
    # FedML tests when round_idx % freq == 0 and in the last round; shieldwall after every freq-th
    assert [r for r in range(12) if is_test_round(fed, r)] == [0, 5, 10, 11]
    plain = dataclasses.replace(fed, common_args=own.common_args)
    assert [r for r in range(12) if is_test_round(plain, r)] == [4, 9, 11]


def test_byzantine_clients_redrawn_each_round_for_fedml_configs():
    from shieldwall.algorithms.adversary import build_adversary

    raw = {"comm_args": {"backend": "MPI"}, "train_args": {"client_num_in_total": 10},
           "attack_args": {"enable_attack": True, "attack_type": "byzantine",
                           "attack_mode": "random", "byzantine_client_num": 2}}
    adv = build_adversary(config_from_dict(raw), 10)
    assert len({adv.byzantine_ids(r) for r in range(8)}) > 1
    raw["attack_args"]["byzantine_redraw"] = False
    adv = build_adversary(config_from_dict(raw), 10)
    assert len({adv.byzantine_ids(r) for r in range(8)}) == 1


def test_data_silo_selection_is_fedmls_draw():
    for r in (0, 1, 7):
        np.random.seed(r)
        expected = np.random.choice(range(1000), 2, replace=False)
        assert data_silo_selection(r, 1000, 2) == [int(v) for v in expected]
    assert data_silo_selection(3, 2, 2) == [0, 1]


def _digits_args(tmp_path, extra=""):
    path = tmp_path / "fedml_config.yaml"
    path.write_text(f"""
common_args: {{training_type: simulation, random_seed: 0}}
data_args: {{dataset: digits, partition_method: hetero, partition_alpha: 0.5}}
model_args: {{model: lr}}
train_args: {{federated_optimizer: FedAvg, client_num_in_total: 6, client_num_per_round: 6,
             comm_round: 2, epochs: 1, batch_size: 16, learning_rate: 0.05}}
comm_args: {{backend: sp}}
tracking_args: {{log_file_dir: {tmp_path}, enable_tensorboard: false}}
{extra}
""")
    return fedml.init(load_args(["--cf", str(path)]))


def test_data_load_is_fedmls_list_over_shieldwalls_partition(tmp_path):
    args = _digits_args(tmp_path)
    dataset, class_num = fedml.data.load(args)
    assert len(dataset) == 8 and class_num == 10 == dataset[7]
    train_num, test_num, train_g, test_g, counts, local, test_local, _ = dataset
    assert isinstance(train_g, DataLoader) and isinstance(local[0], DataLoader)
    assert sorted(local) == list(range(6)) and sum(counts.values()) == train_num
    assert sum(len(test_local[c].dataset) for c in test_local) == test_num
    model = fedml.model.create(args, class_num)
    cfg, parts = components_from_fedml(args.config(), dataset, model, torch.device("cpu"))
    ref = build_components(args.config())
    assert torch.equal(parts.initial_params, ref.initial_params)  # same seeded init
    for c in range(6):  # the same clients as `shieldwall run` on the same YAML
        assert torch.equal(parts.shards[c].y, ref.shards[c].y.sort().values) or \
            torch.equal(parts.shards[c].y.sort().values, ref.shards[c].y.sort().values)
    assert fedml.model.create(args, 10)(torch.zeros(1, 1, 8, 8)).min() >= 0  # FedML's sigmoid lr


def test_custom_model_and_list_train_with_attack_and_defense(tmp_path):
    args = _digits_args(tmp_path, """
attack_args: {enable_attack: true, attack_type: byzantine, attack_mode: flip,
              byzantine_client_num: 1}
defense_args: {enable_defense: true, defense_type: krum}""")
    dataset, class_num = fedml.data.load(args)
    # a user's own loaders: lists of (x, y) batches, flat features, FedML's sigmoid LR
    local = {c: [(x.flatten(1), y) for x, y in dl] for c, dl in dataset[5].items()}
    test = [(x.flatten(1), y) for x, y in dataset[3]]
    own = [dataset[0], dataset[1], None, test, dataset[4], local, {}, class_num]

    class LogisticRegression(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(64, class_num)

        def forward(self, x):
            return torch.sigmoid(self.linear(x))

    summary = fedml.FedMLRunner(args, torch.device("cpu"), own, LogisticRegression()).run()
    assert summary["final_test_accuracy"] > 0.2
    assert summary["rounds"] == 2


@pytest.mark.parametrize("mutate,expected", [
    (lambda d, m: (d[:7], m), "FedML's list of 8 items"),
    (lambda d, m: (d, nn.Linear(64, 5)), r"output \(2, 5\) does not match the labels"),
    (lambda d, m: (d, nn.Linear(10, 10)), "cannot take the data's inputs"),
    (lambda d, m: ([*d[:7], 3], m), "labels range over"),
])
def test_bad_list_or_model_is_one_line(tmp_path, mutate, expected):
    args = _digits_args(tmp_path)
    dataset, class_num = fedml.data.load(args)
    flat = [*dataset[:5], {c: [(x.flatten(1), y) for x, y in dl] for c, dl in dataset[5].items()},
            *dataset[6:]]
    flat[3] = [(x.flatten(1), y) for x, y in dataset[3]]
    data, model = mutate(flat, nn.Linear(64, 10))
    with pytest.raises(ConfigError, match=expected):
        fedml.FedMLRunner(args, torch.device("cpu"), data, model).run()


def test_unknown_api_names_the_nearest():
    with pytest.raises(UnsupportedAPIError, match="nearest is fedml.FedMLRunner"):
        fedml.FedMLRuner  # noqa: B018
    with pytest.raises(ImportError, match="nearest is fedml.cross_silo.Client"):
        from shieldwall.fedml.cross_silo import Clinet  # noqa: F401
    with pytest.raises(ConfigError, match="custom FedML trainers"):
        fedml.FedMLRunner(None, None, None, None, client_trainer=object())
    with pytest.raises(ImportError, match="fedml.core.ClientTrainer.*federated_optimizer"):
        from shieldwall.fedml.core import ClientTrainer  # noqa: F401
    from shieldwall.fedml.simulation import SimulatorMPI

    assert SimulatorMPI is not None


def test_silos_train_fedmls_part_of_the_round(tmp_path):
    from shieldwall.runtime.net.node import build_client_executor
    from shieldwall.runtime.net.parts import PartSelectingExecutor

    raw = {"common_args": {"training_type": "cross_silo"},
           "data_args": {"dataset": "digits"},
           "train_args": {"client_id_list": "[1, 2]", "client_num_in_total": 20,
                          "client_num_per_round": 2, "comm_round": 3}}
    cfg = config_from_dict(raw)
    executors = [build_client_executor(cfg, k)[0] for k in (1, 2)]
    assert all(isinstance(e, PartSelectingExecutor) for e in executors)
    for r in range(4):
        assert [e.part_of(r) for e in executors] == data_silo_selection(r, 20, 2)
        shard = executors[1].shard_for(r)
        assert torch.equal(shard.y, executors[1].parts[data_silo_selection(r, 20, 2)[1]].y)
    raw["common_args"]["fedml_semantics"] = "off"  # shieldwall's own: silo K keeps part K - 1
    executor, index = build_client_executor(config_from_dict(raw), 2)
    assert not isinstance(executor, PartSelectingExecutor) and index == 1


def test_cli_takes_cf_wherever_it_takes_a_config(capsys, krum, shared_datasets):
    from shieldwall.cli import main

    code = main(["check", "--cf", krum, "--set", f"data_args.data_cache_dir={shared_datasets}",
                 "--set", "common_args.using_mlops=true", "--set", "dp_args.epsilon=1"])
    out = capsys.readouterr().out
    assert code == 0 and "OK: the config would run" in out
    assert "semantics  FedML" in out and "fedml_lr" in out
    assert main(["check"]) == 2
    assert "--cf CONFIG" in capsys.readouterr().err
    assert main(["check", krum, "--cf", hier_path(krum)]) == 2
    assert "two configs given" in capsys.readouterr().err


def hier_path(krum: str) -> str:
    return krum.replace("fedml_mpi_krum_mnist_lr", "fedml_hierarchical_cross_silo_mnist_lr")


def test_run_simulation_one_liner(tmp_path, monkeypatch):
    import sys

    _digits_args(tmp_path)  # writes tmp_path/fedml_config.yaml
    monkeypatch.setattr(sys, "argv", ["torch_step_by_step_example.py", "--cf",
                                      str(tmp_path / "fedml_config.yaml")])
    summary = fedml.run_simulation(backend="sp")
    assert summary["rounds"] == 2 and summary["final_test_accuracy"] > 0.1


@pytest.mark.parametrize(("argv", "needle"), [
    (["--rank", "x"], "fedml.init(): argument --rank: invalid int value: 'x'"),
    (["--cf", "c.yaml", "--rank"], "fedml.init(): argument --rank: expected one argument"),
])
def test_bad_launch_flag_is_one_line_naming_it(capsys, argv, needle):
    with pytest.raises(ConfigError) as info:
        parse_flags(argv)
    assert needle in str(info.value)
    assert capsys.readouterr().err == ""  # not argparse's usage block as well

