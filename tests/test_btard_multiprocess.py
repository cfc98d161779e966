"""BTARD-SGD as real processes: 4 peers over torch.distributed (gloo) on 127.0.0.1, 1 Byzantine.

The peers are forked from a multiprocessing fork server that imported torch and scikit-learn
once, so that each does not pay their import time again (the protocol is the same as under
``python -m shieldwall.btard.launch``, which starts fresh interpreters)."""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import sys
from pathlib import Path

import pytest
import yaml

from shieldwall.btard.launch import free_port, peer_process

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses the forkserver")
# imported once by the fork server, so that the four peers do not pay for them again
PRELOAD = ["torch", "torch._dynamo", "sklearn.datasets", "shieldwall.btard.run",
           "shieldwall.train", "shieldwall.data.digits"]

CONFIG = {
    "common_args": {"random_seed": 3},
    "data_args": {"dataset": "digits", "partition_method": "iid"},
    "model_args": {"model": "lr"},
    "device_args": {"num_threads": 1},
    "train_args": {"federated_optimizer": "BTARD", "client_num_in_total": 4, "comm_round": 12,
                   "batch_size": 16, "learning_rate": 0.1, "checkpoint_frequency": 0},
    "validation_args": {"frequency_of_the_test": 12},
    "comm_args": {"runtime": "torch_distributed", "round_timeout": 60},
    "attack_args": {"enable_attack": True, "attack_type": "sign_flip", "scale": 1000,
                    "byzantine_client_num": 1},
    "btard_args": {"tau": 1.0, "validators": 4, "signature": "auto"},
}


def test_four_processes_ban_the_byzantine_peer(tmp_path: Path) -> None:
    cfg = dict(CONFIG, tracking_args={"log_file_dir": str(tmp_path), "run_name": "mp",
                                      "enable_tensorboard": False, "progress_bar": False})
    path = tmp_path / "btard_mp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ctx = mp.get_context("forkserver")  # children fork from a clean server, not from pytest
    ctx.set_forkserver_preload(PRELOAD)
    results: mp.Queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=peer_process, args=(r, 4, port, str(path), [], results))
             for r in range(4)]
    for p in procs:
        p.start()
    got = {}
    try:
        for _ in procs:
            rank, status, value = results.get(timeout=240)
            got[rank] = (status, value)
    except queue.Empty:
        pass
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert all(status == "ok" for status, _ in got.values()), got
    assert len(got) == 4, got
    summaries = [v for _, v in got.values() if v]
    assert len(summaries) == 1  # only the lowest-ranked honest peer writes the run directory
    summary = summaries[0]
    (byzantine,) = summary["byzantine"]
    assert list(summary["banned"]) == [byzantine] and summary["honest_banned"] == []
    records = [json.loads(x) for x in (tmp_path / "mp" / "metrics.jsonl").read_text().splitlines()]
    bans = [b for r in records for b in r["banned"]]
    assert [b["peer"] for b in bans] == [byzantine] and bans[0]["reason"] == "bad_gradient"
    assert records[-1]["active"] == 3 and records[-1]["step_taken"]
    assert records[-1]["bytes"]["scatter"] > 0
