"""The torch device a user names (``--device``, ``device_args.device``), checked.

A misspelt device or an accelerator that is not there is a ``ValueError`` naming the flag or key
(one line from the CLI), not torch's ``RuntimeError``/``AssertionError`` at the first tensor.
"""

from __future__ import annotations

import torch

__all__ = ["select_device"]

_NAMES = "cpu, cuda, cuda:N, gpu, mps or auto"


def select_device(name: str, key: str = "--device") -> torch.device:
    """``cpu``, ``cuda[:N]`` (``gpu`` as in the fault-tolerant simulator), ``mps`` or ``auto``;
    ``key`` is what the user set (a flag or a config key), named in the error."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "gpu":
        name = "cuda"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{key}: unknown device {name!r}; use {_NAMES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{key}: device {name!r}: CUDA is not available in this torch "
                             f"({torch.__version__}); use cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{key}: device {name!r}: only {torch.cuda.device_count()} CUDA "
                             "device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{key}: device {name!r}: MPS is not available; use cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{key}: unsupported device {name!r}; use {_NAMES}")
    return device
