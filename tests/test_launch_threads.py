"""Torch threads per process under a launcher that puts several processes on one node.

``mpirun -np 6`` on 2 cores used to start 6 processes with 2 threads each, spinning against each
other; runtime.launch.configure_threads gives each ``max(1, cores // local_world_size)`` unless
the user chose (``device_args.num_threads`` or ``OMP_NUM_THREADS``), and says so once.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch

from shieldwall import threads as launch
from shieldwall.threads import configure_threads, launch_threads


@pytest.mark.parametrize(
    "env,cores,expected",
    [
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "6", "OMPI_COMM_WORLD_SIZE": "6"}, 2, (1, 6, 2)),
        ({"LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}, 16, (4, 4, 16)),
        ({"LOCAL_WORLD_SIZE": "3"}, 8, (2, 3, 8)),
        ({"MPI_LOCALNRANKS": "2"}, 2, (1, 2, 2)),
        ({"LOCAL_WORLD_SIZE": "6", "OMP_NUM_THREADS": "2"}, 2, None),  # the user's choice
        ({"LOCAL_WORLD_SIZE": "1"}, 2, None),  # alone on the node: torch's default
        ({"WORLD_SIZE": "4", "RANK": "0"}, 2, None),  # the launcher does not say
        ({}, 2, None),
        ({"LOCAL_WORLD_SIZE": "many"}, 2, None),
    ],
)
def test_launch_threads_from_local_world_size_and_cores(env, cores, expected):
    assert launch_threads(env, cores=cores) == expected


def test_configure_threads_user_choice_wins_and_launch_is_logged_once(monkeypatch, caplog):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
        monkeypatch.setattr(launch, "_told", False)
        assert configure_threads(3) == 3 and torch.get_num_threads() == 3  # num_threads wins
        with caplog.at_level(logging.INFO, logger="shieldwall.threads"):
            assert configure_threads(None) == 1 and torch.get_num_threads() == 1
            configure_threads(None)
        said = [r.getMessage() for r in caplog.records if "per process" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("64 processes on ")
        assert "1 torch thread per process" in said[0]
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # set by the user (or torchrun): left alone
        torch.set_num_threads(2)
        assert configure_threads(None) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


CHILD = """
import os, sys, torch
from shieldwall.runtime.launch import configure_threads
cores = len(os.sched_getaffinity(0))
rank = os.environ["OMPI_COMM_WORLD_RANK"]
with open(os.path.join(sys.argv[1], "rank-" + rank), "w") as out:
    out.write(f"{configure_threads(None)} {torch.get_num_threads()} {cores}")
"""


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not on PATH (openmpi-bin)")
def test_mpirun_oversubscribed_processes_get_a_share_of_the_cores(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "3", "-x", "PYTHONPATH",
           sys.executable, "-c", CHILD, str(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    answers = sorted(tmp_path.glob("rank-*"))
    assert [p.name for p in answers] == ["rank-0", "rank-1", "rank-2"]
    for path in answers:
        chosen, actual, cores = map(int, path.read_text().split())
        assert chosen == actual == max(1, cores // 3)
