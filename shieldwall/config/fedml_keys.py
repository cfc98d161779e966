"""Every key FedML's argument loader accepts, and what shieldwall does with those it does not use.

FedML's ``load_arguments`` copies every key of every section of ``fedml_config.yaml`` onto one
flat ``args`` object, so any key is "accepted" there. shieldwall accepts the keys FedML's own
configs and code use: :data:`SECTION_KEYS` (every key of every ``fedml_config.yaml`` in
``FedML-AI/FedML``, by section) and :data:`CODE_KEYS` (every ``args.<name>`` FedML's library reads).
A key shieldwall's schema does not have is accepted and named once in the log as unused; a key that
changes what FedML does but is ignored here gets a warning saying what happens instead
(:func:`behaviour_warnings`); features outside this project's scope (FHE, secure aggregation,
FedML's local DP) are refused in one line (:func:`refused_features`). Any other unknown key is
still an error with "did you mean". Catalogue generated from FedML-AI/FedML at commit 03e11dfe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "SECTION_KEYS",
    "CODE_KEYS",
    "FEDML_SECTIONS",
    "is_fedml_key",
    "behaviour_warnings",
    "refused_features",
    "fedml_markers",
]

#: FedML config sections and the keys FedML's example configs set in them.
SECTION_KEYS: dict[str, frozenset[str]] = {
    'attack_args': frozenset({
        'add_attack', 'attack_mode', 'attack_type', 'byzantine_client_num', 'enable_attack',
        'original_class_list', 'ratio_of_poisoned_client', 'target_class_list'
    }),
    'client_silo_args': frozenset({
        'launcher_rdzv_port', 'n_node_in_silo', 'n_proc_in_silo', 'n_proc_per_node',
        'node_rank_in_silo', 'pg_master_address', 'pg_master_port', 'proc_rank_in_silo',
        'rank_in_node'
    }),
    'comm_args': frozenset({
        'backend', 'cuda_rpc_gpu_mapping', 'customized_training_thetastore_config',
        'customized_training_web3_config', 'enable_cuda_rpc', 'grpc_ipconfig_path', 'is_mobile',
        'mqtt_config_path', 's3_config_path', 'trpc_master_config_path'
    }),
    'common_args': frozenset({
        'config_version', 'exist_ok', 'mlops_api_key', 'mlops_project_name', 'mlops_run_name',
        'name', 'project', 'random_seed', 'scenario', 'training_type',
        'use_customized_hierarchical', 'using_mlops'
    }),
    'contribution_args': frozenset({
        'contribution_alg'
    }),
    'data_args': frozenset({
        'client_dataset_path', 'data_cache_dir', 'data_col_idx', 'data_conf', 'data_file_path',
        'dataset', 'dataset_name', 'dataset_path', 'dataset_streaming', 'debug', 'download',
        'download_port', 'ego_number', 'eval_dataset_size', 'global_model_file_path',
        'hop_number', 'img_size', 'model_file_cache_folder', 'num_workers_tile', 'part_file',
        'partition_alpha', 'partition_file_path', 'partition_method', 'preprocessed',
        'remove_big_tiff', 'remove_long_seq', 'remove_unused_columns', 'reprocess_input_data',
        'response_template', 'secret_path', 'test_dataset_size', 'test_size', 'tile_batch_size',
        'tile_from_scratch', 'tokenize_on_the_fly', 'train_size', 'truncate_long_seq'
    }),
    'defense_args': frozenset({
        'add_defense', 'alpha', 'batch_num', 'beta', 'bucket_size', 'byzantine_client_num',
        'cosine_similarity_bound', 'defense_type', 'enable_defense', 'federated_optimizer',
        'krum_param_m', 'norm_bound', 'option_type', 'sigma', 'trim_param_b'
    }),
    'device_args': frozenset({
        'device_type', 'gpi_id', 'gpu_id', 'gpu_mapping_file', 'gpu_mapping_key',
        'multi_gpu_server', 'using_gpu', 'worker_num'
    }),
    'dp_args': frozenset({
        'C', 'clipping_norm', 'delta', 'dp_solution_type', 'dp_type', 'enable_dp',
        'enable_rdp_accountant', 'epsilon', 'mechanism_type', 'noise_multiplier', 'rdp_alpha',
        'sensitivity', 'stop_training_at_epsilon'
    }),
    'environment_args': frozenset({
        'bootstrap', 'launcher'
    }),
    'fednova_args': frozenset({
        'dampening', 'gmf', 'mu'
    }),
    'fhe_args': frozenset({
        'batch_size', 'enable_fhe', 'file_loc', 'scaling_factor', 'scheme'
    }),
    'model_args': frozenset({
        'alpha', 'backbone', 'backbone_freezed', 'backbone_pretrained', 'class_num',
        'conf_thres', 'deeplearning_backend', 'do_lower_case', 'dropout', 'eps', 'extract_feat',
        'formulation', 'global_model_file_path', 'graph_embedding_dim', 'group_norm_channels',
        'hidden_size', 'image_size', 'input_dim', 'input_size', 'iou_thres', 'load_pretrained',
        'lr_scheduler', 'model', 'model_class', 'model_file_cache_folder', 'model_name_or_path',
        'model_type', 'n_layers', 'node_embedding_dim', 'normalize_adjacency',
        'normalize_features', 'num_heads', 'output_dim', 'outstride', 'peft_type',
        'readout_hidden_dim', 'single_cls', 'skip_log_model_net', 'sparse_adjacency', 'sync_bn',
        'use_flash_attention', 'weights', 'yolo_cfg', 'yolo_hyp', 'yolo_verbose'
    }),
    'private_config_paths': frozenset({
        'client_silo_config_paths', 'server_config_path'
    }),
    'secure_aggregation_args': frozenset({
        'enable_sa', 'precision_parameter', 'prime_number', 'sa_method'
    }),
    'task_args': frozenset({
        'fa_task', 'k', 'use_all_data'
    }),
    'tracking_args': frozenset({
        'enable_tracking', 'enable_wandb', 'local_log_output_path', 'log_file_dir',
        'mlops_api_key', 'mlops_project_name', 'mlops_run_name', 'run_name', 'using_mlops',
        'wandb_entity', 'wandb_key', 'wandb_name', 'wandb_only_server', 'wandb_project'
    }),
    'train_args': frozenset({
        'alpha', 'batch_size', 'bf16', 'checkpoint_interval', 'ci', 'client_id_list',
        'client_num_in_total', 'client_num_per_round', 'client_optimizer', 'clip_grad_norm',
        'comm_round', 'dampening', 'ddp_find_unused_parameters', 'deepspeed', 'epochs',
        'epochs_client', 'epochs_server', 'eval_accumulation_steps', 'eval_batch_size',
        'eval_steps', 'evaluate_during_training', 'evaluate_during_training_steps',
        'evaluation_strategy', 'fa_task', 'federated_optimizer', 'fedprox_mu', 'fp16',
        'freeze_layers', 'gmf', 'gradient_accumulation_steps', 'gradient_checkpointing',
        'group_comm_round', 'group_method', 'group_num', 'is_debug_mode', 'learning_rate',
        'local_max_steps', 'local_num_train_epochs', 'logging_steps', 'logging_strategy',
        'loss_type', 'lr', 'lr_decay_rate', 'lr_milestones', 'lr_schedule', 'lr_step_size',
        'max_grad_norm', 'max_seq_length', 'metric', 'ml_engine', 'model_dtype', 'momentum',
        'mu', 'nesterov', 'no_bn_wd', 'optimizer', 'output_dir', 'per_device_eval_batch_size',
        'per_device_train_batch_size', 'save_on_each_node', 'save_steps', 'save_strategy',
        'save_total_limit', 'seed', 'server_checkpoint_interval', 'server_lr',
        'server_momentum', 'server_optimizer', 'sleep_time_max', 'sweep', 'temperature',
        'warmup_steps', 'wd', 'weight_decay', 'whether_distill_on_the_server',
        'whether_training_on_client'
    }),
    'validation_args': frozenset({
        'frequency_of_the_test', 'is_aggregator_test', 'save_frequency', 'test_on_client_ranks',
        'test_on_clients'
    }),
}
#: Every ``args.<name>`` FedML's library reads (outside its MLOps scheduler and serving code).
CODE_KEYS: frozenset[str] = frozenset({
    'C', '_replace', 'account_id', 'action', 'alpha', 'api_key', 'append', 'arch',
    'arch_learning_rate', 'arch_weight_decay', 'attack_case', 'attack_iteration_idxs',
    'attack_mode', 'attack_prob', 'attack_round_num', 'attack_training_rounds', 'attack_type',
    'auxiliary', 'auxiliary_weight', 'b_symmetric', 'backbone', 'backbone_freezed',
    'backbone_pretrained', 'backend', 'batch_idx', 'batch_size', 'block_size',
    'byzantine_client_num', 'cache_dir', 'checkname', 'ci', 'client_id', 'client_id_list',
    'client_idx', 'client_model', 'client_num_in_total', 'client_num_per_round',
    'client_number', 'client_optimizer', 'clipping', 'clipping_norm', 'comm', 'comm_round',
    'config_version', 'contribution_alg', 'cpu_transfer', 'cuda_rpc_gpu_mapping',
    'customized_training_mqtt_config', 'customized_training_s3_config',
    'customized_training_thetastore_config', 'customized_training_web3_config', 'cutout',
    'cutout_length', 'dampening', 'data', 'data_cache_dir', 'data_col_idx', 'data_file_path',
    'data_map_file', 'data_parallel', 'data_silo_config', 'dataset', 'deeplearning_backend',
    'defense_type', 'delta', 'deploy', 'device', 'device_id', 'device_type', 'dp_solution_type',
    'drop_path_prob', 'early_stopping', 'edge_id', 'enable_attack', 'enable_contribution',
    'enable_cuda_rpc', 'enable_defense', 'enable_dp', 'enable_fhe', 'enable_rdp_accountant',
    'enable_tracking', 'enable_wandb', 'endpoint_name', 'env_version',
    'environment_hetero_ratio', 'epoch', 'epochs', 'epochs_client', 'epochs_server', 'epsilon',
    'eval_batch_size', 'evaluation_frequency', 'expand_ratio', 'extract_feat', 'fa_task',
    'feddyn_alpha', 'federated_optimizer', 'fedprox', 'fedprox_mu', 'filter_less', 'fl_trainer',
    'flag', 'fraction', 'freeze_bn', 'frequency_of_the_test', 'frequency_of_train_acc_report',
    'global_model_file_path', 'gmf', 'gpu', 'gpu_hetero_ratio', 'gpu_id', 'gpu_mapping_file',
    'gpu_mapping_key', 'gpu_num_per_server', 'gpu_server_num', 'gpu_util_parse', 'grad_clip',
    'group_comm_round', 'group_method', 'group_num', 'group_server_id_list',
    'grpc_ipconfig_path', 'id_skip', 'infer_json', 'inference', 'init_channels',
    'initialize_all_clients', 'input_filters', 'insert', 'is_browser', 'items',
    'iteration_number', 'json', 'k', 'kernel_size', 'lambda_train_regularizer',
    'lambda_valid_regularizer', 'latency', 'launcher_rdzv_port', 'layers', 'learning_rate',
    'learning_rate_min', 'load_yaml_config', 'local_iterations', 'local_rank', 'log_file_dir',
    'log_file_path', 'log_server_url', 'loss_type', 'lr', 'lr_decay_rate', 'lr_milestones',
    'lr_schedule', 'lr_scheduler', 'lr_step', 'lr_step_size', 'malicious_client_id',
    'manual_launch', 'master_address', 'max_grad_norm', 'max_seq_length', 'max_word_len',
    'mechanism_type', 'mimelite', 'ml_engine', 'mlm_probability', 'mlops_api_key',
    'mlops_project_name', 'mlops_run_name', 'mode', 'model', 'model_class',
    'model_file_cache_folder', 'model_path', 'model_type', 'momentum', 'mqtt_config_path', 'mu',
    'multi_gpu_server', 'n_node_in_silo', 'n_proc_in_silo', 'n_proc_per_node', 'name',
    'nesterov', 'network_interface', 'no_bn_wd', 'no_cache', 'node_addresses', 'node_rank',
    'noise_multiplier', 'num', 'num_class', 'num_images', 'num_loaders', 'num_repeat',
    'optimizer', 'original_class_list', 'os_name', 'output_filters', 'outstride',
    'overwrite_cache', 'part_file', 'partition_alpha', 'partition_file_path',
    'partition_method', 'pg_master_address', 'pg_master_port', 'poison_end_round_id',
    'poison_start_round_id', 'poison_type', 'poisoned_training_round', 'pop',
    'precision_parameter', 'prime_number', 'privacy_guarantee', 'private_local_data',
    'proc_rank_in_silo', 'process_id', 'protected_layers', 'random_seed', 'rank',
    'rank_in_node', 'ratio_of_poisoned_client', 'rdp_alpha', 'report_freq',
    'reprocess_input_data', 'role', 'round_idx', 'run_device_id', 'run_id', 'run_name',
    'runtime_est_mode', 'save', 'save_client_model', 'save_model', 'scale_factor_S', 'scenario',
    'se_ratio', 'seed', 'self', 'sensitivity', 'seperator', 'server_agent_id', 'server_id',
    'server_lr', 'server_momentum', 'server_optimizer', 'set_attr_from_config', 'sigma',
    'simulation_environment_hetero', 'simulation_gpu_hetero', 'simulation_schedule', 'stage',
    'stride', 'subdir', 'sweep', 'sync_bn', 'synthetic_data_url', 'sys_perf_profiling',
    'target_class_list', 'targeted_number_active_clients', 'task', 'tau_max', 'tau_min',
    'temperature', 'test', 'test_batch_size', 'test_bsz', 'test_on_clients', 'test_ratio',
    'test_size', 'time_varying', 'topology_neighbors_num_directed',
    'topology_neighbors_num_undirected', 'train', 'train_batch_size', 'train_data_num_in_total',
    'train_portion', 'train_size', 'training_type', 'trpc_master_config_path', 'type',
    'use_all_data', 'use_cached_eval_features', 'use_updates', 'user', 'user_name', 'using_gpu',
    'using_mlops', 'version', 'wandb_entity', 'wandb_group_id', 'wandb_project', 'wd',
    'weight_decay', 'whether_distill_on_the_server', 'whether_training_on_client', 'worker_num',
    'yaml_config_file'
})


#: Sections FedML configs use that shieldwall's schema does not have (accepted, named unused).
FEDML_SECTIONS = frozenset(SECTION_KEYS)


def is_fedml_key(section: str, key: str) -> bool:
    """Whether FedML's configs or code know ``key`` (in ``section``, or anywhere in its code)."""
    return key in SECTION_KEYS.get(section, ()) or key in CODE_KEYS


_BACKENDS_USED = {"mpi", "sim", "simulation", "local", "sp", "gloo", "nccl", "torch", "grpc"}


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes"))


def behaviour_warnings(raw: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Warnings for FedML keys that change what FedML does but that shieldwall ignores.

    ``raw`` maps section to its (file and ``--set``) keys. Launch-dependent checks
    (``worker_num`` against the launch, ``using_gpu`` without a GPU) are made where the launch and
    the device are known (:mod:`shieldwall.fedml`, :func:`shieldwall.train.build_components`).
    """
    flat: dict[str, Any] = {}
    for body in raw.values():
        if isinstance(body, Mapping):
            flat.update(body)
    out = []
    if _true(flat.get("enable_wandb")):
        out.append("tracking_args.enable_wandb: true: shieldwall does not log to Weights & Biases; "
                   "metrics go to metrics.jsonl and TensorBoard files in the run directory")
    if _true(flat.get("using_mlops")):
        out.append("common_args.using_mlops: true: there is no MLOps platform here; the run is "
                   "local and client_id_list is read from the config")
    backend = flat.get("backend")
    if backend is not None and str(backend).strip().lower() not in _BACKENDS_USED:
        out.append(f"comm_args.backend: {backend}: shieldwall does not use {backend}; cross-silo "
                   "processes talk over gRPC (the server's comm_args.server_address:server_port), "
                   "and runs launched by mpirun/torchrun use torch.distributed (gloo)")
    for key in ("enable_cuda_rpc", "is_mobile"):
        if _true(flat.get(key)):
            out.append(f"comm_args.{key}: true is ignored: shieldwall's transports are gloo and "
                       "gRPC")
    return out


_REFUSED = {
    "enable_fhe": ("fhe_args.enable_fhe", "fully homomorphic encryption"),
    "enable_sa": ("secure_aggregation_args.enable_sa", "secure aggregation"),
    "enable_dp": ("dp_args.enable_dp", "FedML's differential-privacy frameworks (use "
                  "defense_type: weak_dp for Gaussian noise on the global model)"),
    "enable_contribution": ("contribution_args.enable_contribution", "contribution assessment"),
}


def refused_features(raw: Mapping[str, Mapping[str, Any]]) -> str | None:
    """One line refusing a FedML feature outside shieldwall's scope, or ``None``."""
    for section, body in raw.items():
        if not isinstance(body, Mapping):
            continue
        for key, (where, what) in _REFUSED.items():
            if _true(body.get(key)):
                return (f"{section}.{key}: {what} is outside shieldwall's scope (Byzantine-robust "
                        f"training); set {where.split('.')[-1]}: false to run without it")
    return None


def fedml_markers(given: Mapping[str, Mapping[str, Any]], unused: list[str]) -> list[str]:
    """Why a config reads as FedML's (``common_args.fedml_semantics: auto``): the keys only FedML
    uses that it sets. Empty for shieldwall's own configs."""
    found = []
    kind = str(given.get("common_args", {}).get("training_type", "")).lower()
    if kind in ("cross_silo", "cross_device", "cross_cloud"):
        found.append(f"common_args.training_type: {kind}")
    for section, key in (("comm_args", "backend"), ("device_args", "worker_num")):
        if key in given.get(section, {}):
            found.append(f"{section}.{key}")
    return found + list(unused)
