"""Experiment configuration: FedML-layout YAML → validated dataclasses."""

from shieldwall.config.loader import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
)
from shieldwall.config.schema import ExperimentConfig

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_override",
]
