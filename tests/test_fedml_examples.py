"""FedML's published example scripts, run from ``../shared/fedml_examples`` with only their import
lines changed (``import fedml`` → ``import shieldwall.fedml as fedml``), in real processes.

Config values a test needs to change (data folder, rounds, free ports) go through
``SHIELDWALL_FEDML_SET`` (``section.key=value;…``, applied by ``fedml.init()`` like ``--set``),
so the YAML files stay as published. Default suite: the MPI example's script in one process
(``training_type: simulation``) and a script calling an API we do not have; ``-m slow``: the MPI
example under ``mpirun -np 6``, the hierarchical example (server + two silos of two DDP trainers
each, one started by FedML's ``client_dist_launcher.py`` under torchrun) and the "custom data and
model" client.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHIELDWALL_SHARED", REPO.parent / "shared"))
EXAMPLES = SHARED / "fedml_examples"
CUSTOM_HELPERS = ("from shieldwall.fedml.data import split_data_for_dist_trainers\n"
                  "from shieldwall.fedml.data.MNIST.data_loader import download_mnist, "
                  "load_partition_data_mnist\n")
# FedML's client_dist_launcher.py (not published with the example's text), import line changed
LAUNCHER = """import sys
from shieldwall.fedml.cross_silo.client.client_launcher import CrossSiloLauncher

if __name__ == "__main__":
    CrossSiloLauncher.launch_dist_trainers("client/torch_client.py", sys.argv[1:])
"""


def example(tmp_path: Path, name: str) -> Path:
    """A copy of ``fedml_examples/name`` with every script's FedML import lines changed."""
    src = EXAMPLES / name
    if not src.is_dir():
        pytest.skip(f"FedML examples not found at {src} (set SHIELDWALL_SHARED)")
    dst = tmp_path / name.replace("/", "_")
    shutil.copytree(src, dst)
    for script in dst.rglob("*.py"):
        text = re.sub(r"^import fedml$", "import shieldwall.fedml as fedml",
                      script.read_text(), flags=re.M)
        text = re.sub(r"^from fedml\b", "from shieldwall.fedml", text, flags=re.M)
        script.write_text(text)
    return dst


def free_ports(n: int = 1) -> int:
    """A port ``p`` with ``p .. p+n-1`` free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65536:
            continue
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def env(*sets: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "SHIELDWALL_FEDML_SET": ";".join(sets)}


def final_accuracy(text: str) -> float:
    found = re.findall(r"final test accuracy: ([0-9.]+)%", text)
    assert found, text[-3000:]
    return float(found[-1]) / 100


def run_dir_of(text: str) -> Path:
    return Path(re.findall(r"\(run directory: (.+)\)", text)[-1])


def test_mpi_example_script_in_one_process(tmp_path, shared_datasets):
    d = example(tmp_path, "mpi_krum")
    out = subprocess.run(
        [sys.executable, "torch_mpi.py", "--cf", "config/fedml_config.yaml"], cwd=d,
        env=env(f"data_args.data_cache_dir={shared_datasets}", "train_args.comm_round=2",
                "common_args.training_type=simulation", "tracking_args.enable_tensorboard=false"),
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert final_accuracy(out.stdout) > 0.4
    run = d / run_dir_of(out.stdout)
    summary = json.loads((run / "summary.json").read_text())  # JSON, not YAML
    assert summary["rounds"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [len(r["byzantine"]) for r in records] == [1, 1]
    assert "test_accuracy" in records[0]  # FedML tests in round 0 (round_idx % freq == 0)
    assert "unused" in out.stderr or "not used by shieldwall" in out.stderr


def test_script_calling_a_missing_api_is_one_line(tmp_path):
    script = tmp_path / "torch_cd.py"
    script.write_text("import shieldwall.fedml as fedml\n\nfedml.run_cross_device_server()\n")
    out = subprocess.run([sys.executable, str(script)], env=env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "fedml.run_cross_device_server" in lines[0]
    assert "nearest is fedml.run_cross_silo_server" in lines[0]


@pytest.mark.slow
def test_mpi_example_under_mpirun(tmp_path, shared_datasets):
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("mpirun not installed (apt-get install openmpi-bin)")
    d = example(tmp_path, "mpi_krum")
    sets = (f"data_args.data_cache_dir={shared_datasets}", "train_args.comm_round=3",
            "tracking_args.enable_tensorboard=false")
    root = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    cmd = [mpirun, *root, "--oversubscribe", "-np", "6", "-x", "PYTHONPATH", "-x",
           "OMP_NUM_THREADS", "-x", "SHIELDWALL_FEDML_SET", "-x", f"MASTER_PORT={free_ports()}",
           sys.executable, "torch_mpi.py", "--cf", "config/fedml_config.yaml"]
    out = subprocess.run(cmd, cwd=d, env=env(*sets), capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert final_accuracy(out.stdout) > 0.5
    records = [json.loads(line) for line in
               (d / run_dir_of(out.stdout) / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(len(r["byzantine"]) == 1 for r in records)
    assert all(len(r["selected"]) == 1 for r in records)  # Krum keeps one of the five


def _hierarchical(tmp_path, shared_datasets, client_dir: str, custom: bool = False):
    server = example(tmp_path, "hierarchical/one_line")
    d = server if not custom else example(tmp_path, client_dir)
    if custom:
        script = d / "torch_client.py"
        script.write_text(script.read_text().replace(
            "from shieldwall.fedml.cross_silo.hierarchical import Client\n",
            "from shieldwall.fedml.cross_silo.hierarchical import Client\n" + CUSTOM_HELPERS))
    (server / "client_dist_launcher.py").write_text(LAUNCHER)
    e = env(f"data_args.data_cache_dir={shared_datasets}/", "train_args.comm_round=3",
            "tracking_args.enable_tensorboard=false",
            f"comm_args.server_port={free_ports()}",
            f"client_silo_args.pg_master_port={free_ports(2)}")
    cf = ["--cf", "config/fedml_config.yaml"]
    procs = [subprocess.Popen([sys.executable, "server/torch_server.py", *cf, "--rank", "0"],
                              cwd=server, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)]
    if custom:
        clients = [[sys.executable, "torch_client.py", *cf, "--rank", str(k)] for k in (1, 2)]
        cwd = d
    else:  # silo 1 starts its second trainer itself; silo 2 is launched as FedML does
        clients = [[sys.executable, "client/torch_client.py", *cf, "--rank", "1"],
                   [sys.executable, "client_dist_launcher.py", *cf, "--rank", "2"]]
        cwd = server
    procs += [subprocess.Popen(c, cwd=cwd, env=e, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for c in clients]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=900))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "silo of 2 DDP processes" in outs[1][1] and "silo of 2 DDP processes" in outs[2][1]
    assert all("done, 3 rounds answered" in o for o, _ in outs[1:])
    return final_accuracy(outs[0][0])


@pytest.mark.slow
def test_hierarchical_example_server_and_two_ddp_silos(tmp_path, shared_datasets):
    assert _hierarchical(tmp_path, shared_datasets, "hierarchical/one_line") > 0.2


@pytest.mark.slow
def test_custom_data_and_model_client(tmp_path, shared_datasets):
    acc = _hierarchical(tmp_path, shared_datasets, "hierarchical/custom_data_and_model",
                        custom=True)
    assert acc > 0.2
