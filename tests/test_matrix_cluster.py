"""Matrix cells on executors: a local Ray cluster gives the local executor's CSV, retries a cell
whose worker died, records a cell that dies twice as failed; shipped run dirs; Dask."""

from __future__ import annotations

import json
import os

import pytest

from shieldwall.cli import main
from shieldwall.grid import LocalProcessExecutor, build_executor, run_cells
from shieldwall.grid.runner import KILL_HOOK_ENV, cell_resources
from shieldwall.grid.task import unpack_run_dir
from shieldwall.matrix import Cell


def _base(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(
        "data_args: {dataset: digits}\n"
        "train_args: {federated_optimizer: PS-SGD, client_num_in_total: 9, comm_round: 8,\n"
        "             batch_size: 16, learning_rate: 0.1, momentum: 0.9}\n"
        "validation_args: {frequency_of_the_test: 8}\n"
        "device_args: {num_threads: 1}\n"
        "tracking_args: {enable_tensorboard: false}\n"
        "attack_args: {byzantine_client_num: 2}\n"
    )
    return path


def _raw(tmp_path, name):
    return {"tracking_args": {"log_file_dir": str(tmp_path / "cells"), "run_name": name}}


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install shieldwall[cluster])")
    # address="local": a private instance, never a cluster someone else started here.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _csv(out):
    return (out / "matrix.csv").read_text()


def test_ray_matrix_equals_local_and_retries_a_killed_worker(tmp_path, ray_cluster, monkeypatch):
    base = str(_base(tmp_path))
    grid = ["--attacks", "sign_flip(scale=4)", "--defenses", "median", "--seeds", "1"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["matrix", base, *grid, "--out", str(local), "--jobs", "2"]) == 0
    victim = Cell("sign_flip(scale=4)", "median", 0).name
    # The median cell's worker process dies abruptly on its first attempt.
    monkeypatch.setenv(KILL_HOOK_ENV, f"{victim}:1")
    assert main(["matrix", base, *grid, "--out", str(remote), "--executor", "ray",
                 "--results", "ship"]) == 0
    assert _csv(remote) == _csv(local)
    status = json.loads((remote / "status.json").read_text())
    assert status["done"] == status["total"] == 4 and status["finished"]
    assert status["failed"] == {} and list(status["retried"]) == [victim]
    assert "died" in status["retried"][victim]
    assert len(list((remote / "cells").glob("*/summary.json"))) == 4  # shipped back, unpacked
    assert not list(remote.glob(".shieldwall-shared-*"))
    # Resumable whichever executor ran a cell: Ray reruns none of the local run's cells.
    monkeypatch.delenv(KILL_HOOK_ENV)
    stamps = {p: p.stat().st_mtime_ns for p in (local / "cells").glob("*/summary.json")}
    assert main(["matrix", base, *grid, "--out", str(local), "--executor", "ray"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert _csv(local) == _csv(remote)


def test_ray_cell_that_dies_twice_is_failed_and_the_rest_goes_on(tmp_path, ray_cluster,
                                                                 monkeypatch):
    monkeypatch.setenv(KILL_HOOK_ENV, "doomed:2")
    configs = {n: _raw(tmp_path, n) for n in ("fine", "doomed", "also_fine")}
    ex = build_executor("ray")
    out = run_cells(ex, configs, dict, tmp_path, results="auto")
    ex.close()
    assert set(out.results) == {"fine", "also_fine"}
    # 'auto' on one machine: the worker sees the output folder, so the cell writes in place.
    assert out.results["fine"] == configs["fine"]
    assert list(out.failed) == ["doomed"] and out.failed["doomed"].startswith("worker died again")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["done"] == 2 and list(status["failed"]) == ["doomed"]


def test_local_executor_retries_a_dead_worker_once(tmp_path, monkeypatch):
    monkeypatch.setenv(KILL_HOOK_ENV, "once:1")
    configs = {n: _raw(tmp_path, n) for n in ("once", "other")}
    with LocalProcessExecutor(1) as ex:
        out = run_cells(ex, configs, dict, tmp_path, results="shared")
    assert set(out.results) == {"once", "other"} and out.failed == {}
    assert list(out.retried) == ["once"]


def test_cell_exception_is_failed_without_retry(tmp_path):
    configs = {"bad": {"tracking_args": "not a dict"}, "good": _raw(tmp_path, "good")}
    with LocalProcessExecutor(1) as ex:
        out = run_cells(ex, configs, sorted, tmp_path, results="ship")  # sorted(raw) → a list
    assert set(out.failed) == {"bad", "good"}  # 'ship' needs a dict config and a run dir
    assert out.retried == {}


def test_unpack_refuses_paths_outside_the_cell(tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="evil"):
        unpack_run_dir(buf.getvalue(), "cell", tmp_path / "cells")
    assert not (tmp_path / "evil.txt").exists()


def test_resources_and_executor_choice(tmp_path):
    assert cell_resources({"device_args": {"device": "cuda:0"}}, 2, 0.25).num_gpus == 0.25
    assert cell_resources({"device_args": {"using_gpu": True}}).num_gpus == 1.0
    assert cell_resources({"device_args": {"device": "cpu", "using_gpu": True}}).num_gpus == 0
    with pytest.raises(ValueError, match="choose one of local, ray, dask"):
        build_executor("slurm")
    with pytest.raises(ValueError, match="--scheduler"):
        pytest.importorskip("distributed")
        build_executor("dask")


def test_dask_executor_runs_cells(tmp_path):
    distributed = pytest.importorskip("distributed", reason="Dask not installed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        ex = build_executor("dask", scheduler=cluster.scheduler_address)
        configs = {n: _raw(tmp_path, n) for n in ("a", "b", "c")}
        out = run_cells(ex, configs, dict, tmp_path, results="shared")
        ex.close()
    assert set(out.results) == {"a", "b", "c"} and out.failed == {}
    assert os.path.isfile(tmp_path / "status.json")


def test_task_ships_its_run_dir_and_takes_the_node_data_dir(tmp_path, monkeypatch):
    from pathlib import Path

    from shieldwall.grid.task import CellTask, run_cell_task

    def fake_run(raw):
        run_dir = Path(raw["tracking_args"]["log_file_dir"]) / raw["tracking_args"]["run_name"]
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text('{"final_test_accuracy": 0.5}')
        return {"data": raw["data_args"]["data_cache_dir"]}

    raw = {"data_args": {"data_cache_dir": "/driver/data"},
           "tracking_args": {"log_file_dir": str(tmp_path / "cells"), "run_name": "c"}}
    monkeypatch.setenv("SHIELDWALL_DATA_DIR", "/node/data")
    got = run_cell_task(CellTask(name="c", raw=raw, fn=fake_run, results="auto",
                                 marker=str(tmp_path / "no-such-marker")))
    assert got["summary"] == {"data": "/node/data"}
    assert raw["data_args"]["data_cache_dir"] == "/driver/data"  # the caller's config untouched
    assert not (tmp_path / "cells").exists() and got["tar"]  # marker unseen: shipped, not written
    unpack_run_dir(got["tar"], "c", tmp_path / "cells")
    assert (tmp_path / "cells" / "c" / "summary.json").read_text().endswith("0.5}")


_DRIVER = """
import sys, time
from shieldwall.grid.executors import LocalProcessExecutor, Resources
ex = LocalProcessExecutor(jobs=1)
ex.submit("cell", time.sleep, 600, Resources(num_cpus=1, num_gpus=0))
# the worker is up once the pool has a process; print its pid for the test
while not ex._pool._processes:
    time.sleep(0.05)
print(next(iter(ex._pool._processes)), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever adopted it, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")
def test_local_workers_end_when_the_driver_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(driver.stdout.readline())
        time.sleep(1.0)  # let the worker import and start its task
        os.kill(worker, 0)  # running
        driver.send_signal(signal.SIGKILL)  # no cleanup at all in the driver
        driver.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not _alive(worker):
                break
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the local worker outlived its killed driver by 15 s")
    finally:
        driver.kill()


def test_a_second_grid_on_the_same_folder_stops_in_one_line(tmp_path):
    import subprocess
    import sys

    from shieldwall.rundir import RunDirError
    from shieldwall.rundir.directory import held_run_dirs

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from shieldwall.rundir.directory import "
         "claim_run_dir; claim_run_dir(sys.argv[1]); print('held', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with LocalProcessExecutor(1) as ex, pytest.raises(
            RunDirError, match=rf"in use by another grid \(process {holder.pid}\)"
        ):
            run_cells(ex, {"a": _raw(tmp_path, "a")}, dict, tmp_path, results="shared")
    finally:
        holder.kill()
        holder.wait()
    with LocalProcessExecutor(1) as ex:  # the holder gone, the grid runs, then lets go
        out = run_cells(ex, {"a": _raw(tmp_path, "a")}, dict, tmp_path, results="shared")
    assert set(out.results) == {"a"}
    assert tmp_path.resolve() not in held_run_dirs()


def test_a_script_without_a_main_guard_is_told_why_its_workers_die(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "grid_script.py"
    script.write_text(
        "from shieldwall.grid import LocalProcessExecutor, run_cells\n"
        "with LocalProcessExecutor(1) as ex:\n"
        f"    out = run_cells(ex, {{'a': {{'tracking_args': {{'log_file_dir': "
        f"{str(tmp_path / 'cells')!r}, 'run_name': 'a'}}}}}}, dict, {str(tmp_path / 'out')!r}, "
        "results='shared')\n"
        "print('FAILED', out.failed['a'])\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert "has no `if __name__ == \"__main__\":` guard" in done.stdout, done.stdout[-500:]
