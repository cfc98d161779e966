"""The simulator checks every row as the wire runtimes do: bad rows become rejections."""

from __future__ import annotations

import math

import torch
from torch import nn

from shieldwall.algorithms.base import ClientData, LocalResult
from shieldwall.algorithms.fedavg import FedAvg
from shieldwall.config.schema import TrainArgs
from shieldwall.runtime.base import ClientExecutor, RoundPlan, sanitize_row
from shieldwall.runtime.simulator import SimulatorRuntime


class Scripted(ClientExecutor):
    """Client ``c`` answers ``answers[c]`` instead of training (when given)."""

    def __init__(self, answers: dict[int, object], **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.answers = answers

    def run(self, params, plan, client_id):  # type: ignore[override]
        if client_id in self.answers:
            return LocalResult(self.answers[client_id], 3, 0.5)  # type: ignore[arg-type]
        return super().run(params, plan, client_id)


def test_bad_rows_are_rejected_with_sanitize_rows_reasons():
    torch.manual_seed(0)
    alg = FedAvg(TrainArgs(batch_size=2), nn.Linear(3, 2), torch.device("cpu"))
    d = alg.flat.dim
    shards = {c: ClientData(c, torch.randn(4, 3), torch.randint(0, 2, (4,))) for c in range(7)}
    answers = {
        1: torch.full((d,), math.nan),
        2: torch.full((d,), 1e3),  # norm above the bound
        3: torch.ones(d + 1),
        4: torch.ones(d, dtype=torch.float64),
        5: "garbage",
        6: torch.tensor([math.inf] + [0.0] * (d - 1)),
    }
    ex = Scripted(answers, algorithm=alg, shards=shards, seed=0)
    rt = SimulatorRuntime(ex, batched="off", max_update_norm=100.0)
    params = alg.flat.vector()
    res = rt.run_clients(params, RoundPlan(0, tuple(range(7))))
    for c, row in answers.items():
        _, reason = sanitize_row(row, d, params.dtype, 100.0)
        assert res.rejected[c] == reason
        assert torch.isnan(res.updates[c]).all() and res.num_samples[c] == 0
    assert 0 not in res.rejected and torch.isfinite(res.updates[0]).all()
    assert res.num_samples[0] == 4


def test_simulator_keeps_freed_memory_for_reuse_on_glibc():
    import platform

    from shieldwall.runtime import _memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert _memory.retain_freed_memory() is expected
    assert _memory.retain_freed_memory() is expected  # once per process, then cached
