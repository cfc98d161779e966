"""Shared test set-up: one torch thread (tests run beside other processes on 2 cores) and the
location of the shared data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHIELDWALL_SHARED", REPO.parent / "shared"))
SHARED_CONFIGS = SHARED / "configs"
SHARED_DATASETS = Path(os.environ.get("SHIELDWALL_SHARED_DATASETS", SHARED / "datasets"))


@pytest.fixture
def shared_datasets() -> Path:
    """``../shared/datasets``; skips the test when it is absent."""
    if not (SHARED_DATASETS / "mnist").is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATASETS} (set SHIELDWALL_SHARED)")
    return SHARED_DATASETS


@pytest.fixture
def shared_configs() -> Path:
    if not SHARED_CONFIGS.is_dir():
        pytest.skip(f"shared configs not found at {SHARED_CONFIGS} (set SHIELDWALL_SHARED)")
    return SHARED_CONFIGS


@pytest.fixture(params=["numba", "torch"])
def select_path(request):
    """Run a test on the numba fast path of the coordinate-wise rules and on their pure-torch
    fallback (``aggregators._select``); the numba run skips where numba is not installed."""
    from shieldwall.aggregators import _select

    if request.param == "torch":
        with _select.torch_fallback():
            yield request.param
    else:
        if not _select.available():
            pytest.skip("numba not installed: the coordinate-wise fast path is off")
        yield request.param
