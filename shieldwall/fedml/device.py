"""``fedml.device.get_device(args)``: the torch device FedML's config asks for, when it exists."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

__all__ = ["get_device"]

log = logging.getLogger("shieldwall.fedml")


def get_device(args: Any) -> torch.device:
    """CUDA (the process's local rank, or ``gpu_id``) with ``using_gpu: true`` and a GPU; else
    the CPU, with a warning when a GPU was asked for."""
    cfg = args.config()
    d = cfg.device_args
    if d.device:
        return torch.device(d.device)
    if not d.using_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        log.warning("device_args.using_gpu: true but no CUDA GPU is available: training runs on "
                    "the CPU")
        return torch.device("cpu")
    local = os.environ.get("LOCAL_RANK") or os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK")
    index = int(local if local is not None else getattr(args, "gpu_id", 0) or 0)
    return torch.device("cuda", index % torch.cuda.device_count())
