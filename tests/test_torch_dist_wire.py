"""The torch.distributed runtime without processes: wire format, launcher env, faults, W = 1."""

from __future__ import annotations

import pytest
import torch

from shieldwall.config import config_from_dict
from shieldwall.runtime import wire
from shieldwall.runtime._faults import ROGUE_KINDS, WorkerFault, worker_fault
from shieldwall.runtime.launch import DEFAULT_MASTER_PORT, choose_backend, detect_launch
from shieldwall.runtime.spawn import free_port
from shieldwall.runtime.torch_dist import rank_of_client

D = 50


def judge(frame: torch.Tensor, *, round: int = 3, client: int = 7, max_norm: float = 1e6):
    """What the server makes of ``frame`` (received into its fixed, NaN-filled buffer)."""
    buf = wire.prepare_frame(torch.empty(wire.frame_nbytes(D, torch.float32), dtype=torch.uint8),
                             torch.float32)
    buf[: frame.numel()] = frame  # a shorter message fills only the start, as gloo does
    return wire.decode_frame(buf, round=round, client_id=client, dim=D, dtype=torch.float32,
                             max_norm=max_norm, max_samples=100)


def fresh_frame() -> torch.Tensor:
    return torch.zeros(wire.frame_nbytes(D, torch.float32), dtype=torch.uint8)


def test_honest_frame_round_trips_exactly():
    row = torch.randn(D)
    got = judge(wire.encode_frame(fresh_frame(), 3, 7, row, num_samples=42, loss=0.25))
    assert got.reason is None
    assert torch.equal(got.row, row)
    assert (got.num_samples, got.loss) == (42, 0.25)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("nan", "non-finite values"),
        ("wrong_shape", f"shape ({D - 1},), expected ({D},)"),
        ("oversize", f"oversize payload: {40 * D} bytes declared"),
        ("wrong_dtype", "dtype torch.float16, expected torch.float32"),
        ("huge_norm", "above the bound"),
        ("short_frame", "non-finite values"),
        ("bad_header", "malformed frame"),
        ("wrong_client", "frame of client 1007 round 0, expected client 7"),
        ("inflated_samples", "num_samples 1000000000000 outside [1, 100]"),
        ("failed", "computation failed"),
    ],
)
def test_every_rogue_frame_is_rejected_with_its_reason(kind, reason):
    slot = ROGUE_KINDS.index(kind)  # round 0, one slot per rank: kind = ROGUE_KINDS[slot]
    frame = WorkerFault("rogue").frame(fresh_frame(), 0, 7, slot, 1000, torch.randn(D), 10, 0.5)
    got = judge(frame, round=0)
    assert got.row is None
    assert reason in str(got.reason)


def test_oversize_and_stale_frames_are_judged_from_the_header_alone():
    big = torch.ones(10**6)  # declared, never copied: the frame keeps its fixed size
    frame = wire.encode_frame(fresh_frame(), 3, 7, big, 1, 0.0)
    assert frame.numel() == wire.frame_nbytes(D, torch.float32)
    assert "not read" in str(judge(frame).reason)
    stale = wire.encode_frame(fresh_frame(), 2, 7, torch.zeros(D), 1, 0.0)
    assert "round 2" in str(judge(stale).reason)
    assert "malformed" in str(judge(torch.zeros(0, dtype=torch.uint8)).reason)


def test_non_finite_loss_and_2d_rows_are_rejected():
    assert "loss" in str(judge(wire.encode_frame(fresh_frame(), 3, 7, torch.zeros(D), 1,
                                                 float("inf"))).reason)
    two_d = wire.encode_frame(fresh_frame(), 3, 7, torch.zeros(2, D // 2), 1, 0.0)
    assert f"shape (2, {D // 2})" in str(judge(two_d).reason)


def test_task_header_round_trip_and_garbage():
    header = wire.encode_task(wire.ROUND, 12, [1, 5], {5}, D, 3)
    task = wire.decode_task(header, D, 3)
    assert (task.kind, task.round, task.client_ids, task.poisoned) == (wire.ROUND, 12, (1, 5),
                                                                       frozenset({5}))
    with pytest.raises(ValueError):
        wire.decode_task(torch.zeros_like(header), D, 3)
    with pytest.raises(ValueError):
        wire.encode_task(wire.ROUND, 0, [1, 2, 3, 4], set(), D, 3)


def test_frame_tags_differ_across_rounds_and_slots():
    tags = {wire.frame_tag(r, j, 4) for r in range(50) for j in range(4)}
    assert len(tags) == 200 and min(tags) > wire.TAG_PARAMS


def test_clients_are_spread_round_robin_over_worker_ranks():
    assert [rank_of_client(c, 6) for c in range(5)] == [1, 2, 3, 4, 5]  # FedML: -np (N + 1)
    assert [rank_of_client(c, 3) for c in range(5)] == [1, 2, 1, 2, 1]


def test_launch_env_torchrun_mpirun_and_errors():
    tr = detect_launch({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "MASTER_ADDR": "h0",
                        "MASTER_PORT": "1234", "TORCHELASTIC_RUN_ID": "x"})
    assert (tr.rank, tr.world_size, tr.launcher, tr.init_method) == (2, 4, "torchrun",
                                                                     "tcp://h0:1234")
    mpi = detect_launch({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "6",
                         "OMPI_COMM_WORLD_LOCAL_RANK": "0"})
    assert (mpi.world_size, mpi.launcher, mpi.master_addr, mpi.master_port) == (
        6, "mpirun", "127.0.0.1", DEFAULT_MASTER_PORT)
    with pytest.raises(ValueError, match="launcher"):
        detect_launch({})
    with pytest.raises(ValueError, match="not in a world"):
        detect_launch({"RANK": "4", "WORLD_SIZE": "4"})


def test_backend_is_gloo_without_cuda():
    assert choose_backend("MPI", using_gpu=False) == "gloo"
    assert choose_backend("gloo", using_gpu=True) == "gloo"
    if not torch.cuda.is_available():
        assert choose_backend("nccl", using_gpu=True) == "gloo"


def test_fault_spec(monkeypatch):
    monkeypatch.setenv("SHIELDWALL_TEST_FAULTS", "1:rogue; 2:die@3")
    assert worker_fault(2) == WorkerFault("die", 3)
    assert worker_fault(1) == WorkerFault("rogue", 0)
    assert worker_fault(3) is None
    monkeypatch.setenv("SHIELDWALL_TEST_FAULTS", "1:explode")
    with pytest.raises(ValueError, match="unknown action"):
        worker_fault(1)


def test_world_of_one_runs_like_the_simulator(tmp_path, monkeypatch):
    from shieldwall.train import select_runtime, train

    raw = {
        "data_args": {"dataset": "digits", "partition_method": "iid"},
        "model_args": {"model": "lr"},
        "train_args": {"federated_optimizer": "FedAvg", "client_num_in_total": 3,
                       "comm_round": 2, "batch_size": 32, "learning_rate": 0.05},
        "device_args": {"num_threads": 1},
        "comm_args": {"backend": "MPI"},
        "tracking_args": {"log_file_dir": str(tmp_path), "enable_tensorboard": False,
                          "run_name": "sim"},
    }
    sim = train(config_from_dict(raw))
    raw["tracking_args"]["run_name"] = "one"
    env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = config_from_dict(raw)
    assert select_runtime(cfg) == "torch_distributed"
    one = train(cfg)
    a = torch.load(f"{sim['run_dir']}/final_params.pt")
    b = torch.load(f"{one['run_dir']}/final_params.pt")
    assert torch.allclose(a, b, atol=1e-6)
