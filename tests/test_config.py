"""Config loading: both shared FedML configs as they are, overrides, and bad configs' messages."""

from __future__ import annotations

import logging

import pytest
import yaml

from shieldwall.config import ConfigError, config_from_dict, config_to_dict, load_config


def test_shared_krum_config_loads_unchanged(shared_configs, caplog):
    with caplog.at_level(logging.INFO):
        cfg = load_config(shared_configs / "fedml_mpi_krum_mnist_lr.yaml")
    assert cfg.data_args.dataset == "mnist"
    assert cfg.data_args.partition_method == "hetero"
    assert cfg.data_args.partition_alpha == 0.5
    assert cfg.train_args.client_num_in_total == 5
    assert cfg.train_args.comm_round == 10
    assert cfg.train_args.weight_decay == 0.001
    assert cfg.attack_args.enable_attack and cfg.attack_args.attack_mode == "random"
    assert cfg.attack_args.byzantine_client_num == 1
    assert cfg.defense_args.defense_type == "krum"
    assert cfg.comm_args.backend == "MPI"
    ignored = [r.getMessage() for r in caplog.records if "ignoring FedML" in r.getMessage()]
    assert len(ignored) == 1
    assert "common_args.using_mlops" in ignored[0] and "device_args.gpu_mapping_file" in ignored[0]


def test_shared_hierarchical_config_loads_unchanged(shared_configs):
    cfg = load_config(shared_configs / "fedml_hierarchical_cross_silo_mnist_lr.yaml")
    assert cfg.train_args.client_id_list == [1, 2]  # FedML writes it as the string "[1, 2]"
    assert cfg.client_silo_args.n_proc_per_node == 2
    assert cfg.client_silo_args.pg_master_port == 12345
    assert cfg.comm_args.backend == "MQTT_S3"


def test_set_overrides_file_values(shared_configs):
    cfg = load_config(
        shared_configs / "fedml_mpi_krum_mnist_lr.yaml",
        ["data_args.data_cache_dir=../shared/datasets", "train_args.comm_round=3",
         "defense_args.enable_defense=false"],
    )
    assert cfg.data_args.data_cache_dir == "../shared/datasets"
    assert cfg.train_args.comm_round == 3
    assert cfg.defense_args.enable_defense is False
    assert cfg.sources["train_args.comm_round"] == "--set"
    assert cfg.sources["train_args.batch_size"] == "file"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"train_args": {"comm_rounds": 3}},
         ["unknown key train_args.comm_rounds", "did you mean train_args.comm_round"]),
        ({"trian_args": {}}, ["unknown config section 'trian_args'", "did you mean 'train_args'"]),
        ({"data_args": {"partition_method": "heterogeneous"}},
         ["data_args.partition_method", "'heterogeneous'", "allowed values", "hetero"]),
        ({"train_args": {"batch_size": "ten"}}, ["train_args.batch_size", "integer", "'ten'"]),
        ({"train_args": {"learning_rate": -1}}, ["train_args.learning_rate", "> 0", "-1"]),
        ({"train_args": {"client_num_in_total": 4, "client_num_per_round": 5}},
         ["client_num_per_round (5)", "client_num_in_total (4)"]),
        ({"attack_args": {"byzantine_client_num": 11}}, ["byzantine_client_num (11)"]),
        ({"validation_args": {"frequency_of_the_test": 0}}, ["frequency_of_the_test", "> 0"]),
        ({"common_args": {"random_seed": True}}, ["common_args.random_seed", "integer"]),
        ({"common_args": {"random_seed": -1}}, ["common_args.random_seed", "0..4294967295"]),
        ({"common_args": {"random_seed": 2**32}}, ["common_args.random_seed", "0..4294967295"]),
        ({"train_args": {"client_num_in_total": 10**30}},
         ["train_args.client_num_in_total", "2**63 - 1"]),
        ({"train_args": {"client_id_list": [1, 2**64]}}, ["train_args.client_id_list", "2**63"]),
        ({"device_args": {"num_threads": -1}}, ["device_args.num_threads", ">= 0", "-1"]),
        ({"device_args": {"max_clients_per_chunk": 0}}, ["device_args.max_clients_per_chunk"]),
        ({"data_args": {"partition_min_size": -1}}, ["data_args.partition_min_size", ">= 0"]),
        ({"train_args": {"lamb_clamp_value": -1}}, ["train_args.lamb_clamp_value", "> 0"]),
        ({"train_args": {"warmup_steps": -5}}, ["train_args.warmup_steps", ">= 0"]),
        ({"train_args": {"max_grad_norm": 0}}, ["train_args.max_grad_norm", "> 0"]),
        ({"train_args": {"target_batch_size": 0}}, ["train_args.target_batch_size", "> 0"]),
        ({"train_args": {"fedprox_mu": -1}}, ["train_args.fedprox_mu", ">= 0"]),
        ({"comm_args": {"auth_tokens": {"a": "b"}}}, ["comm_args.auth_tokens", "'a' is not"]),
        ({"comm_args": {"server_port": -1}}, ["comm_args.server_port", "0..65535", "-1"]),
        ({"redundancy_args": {"aggregator_f": -1}}, ["redundancy_args.aggregator_f", ">= 0"]),
        ({"client_silo_args": {"pg_master_port": 70000}},
         ["client_silo_args.pg_master_port", "0..65535"]),
        ({"attack_args": {"attack_start": 5, "attack_end": 4}},
         ["attack_args.attack_end (4)", "attack_start (5)", "never run"]),
        ({"btard_args": {"validators": -1}}, ["btard_args.validators", ">= 0", "-1"]),
        ({"btard_args": {"cc_iterations": -1}}, ["btard_args.cc_iterations", ">= 0"]),
        ({"btard_args": {"check_proba": 2}}, ["btard_args.check_proba", "[0, 1]", "2"]),
        ({"btard_args": {"cc_rel_tol": 0}}, ["btard_args.cc_rel_tol", "> 0"]),
        ({"btard_args": {"tau": 0}}, ["btard_args.tau", "> 0"]),
        ({"btard_args": {"silence_limit": 0}}, ["btard_args.silence_limit", ">= 1"]),
        ({"redundancy_args": {"lr_step": 0}}, ["redundancy_args.lr_step", ">= 1", "0"]),
        ({"redundancy_args": {"files_batch_size": 0}}, ["redundancy_args.files_batch_size"]),
        ({"redundancy_args": {"group_size": 0}}, ["redundancy_args.group_size", ">= 1"]),
        ({"redundancy_args": {"epochs": 0}}, ["redundancy_args.epochs", ">= 1"]),
        ({"redundancy_args": {"eval_freq": 0}}, ["redundancy_args.eval_freq", ">= 1"]),
        ({"redundancy_args": {"gamma": -0.1}}, ["redundancy_args.gamma", "> 0"]),
        ({"redundancy_args": {"vote_atol": -1}}, ["redundancy_args.vote_atol", ">= 0"]),
        ({"text_args": {"mlm_probability": 1.5}}, ["text_args.mlm_probability", "(0, 1)"]),
        ({"text_args": {"max_seq_length": 2}}, ["text_args.max_seq_length", "at least 3"]),
        ({"text_args": {"dupe_factor": 0}}, ["text_args.dupe_factor", ">= 1"]),
        ({"text_args": {"hidden_size": 0}}, ["text_args.hidden_size", ">= 1"]),
        ({"text_args": {"hidden_size": 100, "num_attention_heads": 3}},
         ["text_args.hidden_size=100", "num_attention_heads=3"]),
    ],
)
def test_bad_configs_name_the_key(raw, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    for text in expected:
        assert text in str(info.value)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="section.key=value"):
        config_from_dict({}, ["comm_round=3"])


def test_open_sections_collect_parameters():
    cfg = config_from_dict({"defense_args": {"defense_type": "krum", "m": 3}})
    assert cfg.defense_args.params == {"m": 3}
    assert config_to_dict(cfg)["defense_args"]["m"] == 3


def test_resolved_config_round_trips(tmp_path):
    cfg = config_from_dict({"train_args": {"comm_round": 7}, "attack_args": {"sigma": 2.0}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)


def test_none_strings_mean_none():
    cfg = config_from_dict({"defense_args": {"defense_type": "None"},
                            "attack_args": {"attack_type": None}})
    assert cfg.defense_args.defense_type is None
    assert cfg.attack_args.attack_type is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- 1\n- 2\n", "must map client ids to tokens"),
        ("alice: s3cret\n", "maps client ids (integers) to values; 'alice' is not one"),
        ("1: [\n", "comm_args.token_file '{path}' is not valid YAML: line 2"),
    ],
)
def test_bad_token_file_names_it(tmp_path, text, expected):
    from shieldwall.runtime.net.settings import load_tokens

    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    cfg = config_from_dict({"comm_args": {"token_file": str(path)}})
    with pytest.raises(ConfigError) as info:
        load_tokens(cfg)
    assert expected.format(path=path) in str(info.value) and "\n" not in str(info.value)

