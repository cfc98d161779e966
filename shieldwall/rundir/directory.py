"""Where a run lives: its directory under ``tracking_args.log_file_dir`` and the config it records.

A run directory holds ``config.yaml`` (the resolved config the run started with),
``metrics.jsonl``, ``tensorboard/``, the checkpoint, ``final_params.pt`` and ``summary.json``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import yaml

from shieldwall.config import ExperimentConfig, config_to_dict

__all__ = ["make_run_dir", "record_config"]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"


def make_run_dir(cfg: ExperimentConfig) -> Path:
    """A directory for a new run: ``log_file_dir/run_name`` (default: config name + time)."""
    name = cfg.tracking_args.run_name or f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.tracking_args.log_file_dir).expanduser() / name
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def record_config(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Write the resolved config into the run directory."""
    (run_dir / CONFIG_NAME).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
