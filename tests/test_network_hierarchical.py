"""The shared FedML hierarchical cross-silo config, as is (data path, ports, log folder and the
number of rounds overridden): a server and 2 silo clients of 2 DDP trainers each, on MNIST."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = "fedml_hierarchical_cross_silo_mnist_lr.yaml"


def free_port_run(n: int) -> int:
    """A port ``p`` such that ``p … p + n - 1`` are all free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def test_hierarchical_cross_silo_config_runs_with_ddp_silos(
    shared_configs, shared_datasets, tmp_path
):
    config = shared_configs / CONFIG
    if not config.is_file():
        pytest.skip(f"{config} not found")
    server_port, pg_port = free_port_run(1), free_port_run(2)
    common = [
        "--set", f"data_args.data_cache_dir={shared_datasets}",
        "--set", f"comm_args.server_port={server_port}",
        # silo K's DDP group listens on pg_master_port + its position in client_id_list
        "--set", f"client_silo_args.pg_master_port={pg_port}",
        "--set", "train_args.comm_round=20",
        "--set", "device_args.num_threads=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    logs = {name: (tmp_path / f"{name}.log") for name in ("server", "silo1", "silo2")}
    args = {
        "server": ["server", str(config), "--rank", "0", "--log-dir", str(tmp_path / "runs"),
                   "--run-name", "hier"],
        "silo1": ["client", str(config), "--rank", "1"],
        "silo2": ["client", str(config), "--rank", "2"],
    }
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "shieldwall", *args[name], *common],
                               cwd=REPO, env=env, stdout=logs[name].open("w"),
                               stderr=subprocess.STDOUT)
        for name in args
    }
    try:
        assert procs["server"].wait(timeout=150) == 0, logs["server"].read_text()
        for name in ("silo1", "silo2"):
            assert procs[name].wait(timeout=60) == 0, logs[name].read_text()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    text = {name: path.read_text() for name, path in logs.items()}
    # DDP group sizes: each silo is 2 trainers (n_proc_per_node 2 × n_node_in_silo 1) ...
    for k in (1, 2):
        assert f"client {k} joined" in text["server"]
        assert re.search(rf"client {k} joined .*\(silo of 2 DDP processes\)", text["server"])
        silo = text[f"silo{k}"]
        assert f"client {k}: silo of 2 DDP processes" in silo
        ranks = re.findall(rf"silo client index {k - 1}: DDP rank (\d) of (\d)", silo)
        assert sorted(ranks) == [("0", "2"), ("1", "2")]
        assert "done, 20 rounds answered" in silo
    # ... and the silos' rows are the server's 2 clients; each silo holds one of FedML's 1000
    # Dirichlet parts of MNIST (about 60 images), so accuracy is well above chance, not high.
    run = tmp_path / "runs" / "hier"
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in recs] == list(range(20))
    assert all("rejected" not in r for r in recs)
    assert recs[-1]["test_accuracy"] > 0.45
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["train_args"]["client_id_list"] == [1, 2]
