"""A model that diverges ends its run with a recorded outcome, not a failure.

When most of a round's rows, from clients not simulated as Byzantine, are non-finite or above
``comm_args.max_update_norm``, the model itself has diverged: the server raises
:class:`ModelDivergedError` instead of asking for absent clients to come back, and the round loop
evaluates the model as it stands and writes the summary with ``diverged_at_round``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from shieldwall.algorithms.base import ModelDivergedError
from shieldwall.algorithms.defense import Defense
from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.algorithms.server import RoundFailedError, Server
from shieldwall.cli import main
from shieldwall.config import config_from_dict
from shieldwall.config.schema import TrainArgs
from shieldwall.runtime.base import RoundResults
from shieldwall.train import train

sys.path.insert(0, str(Path(__file__).parent))
from test_train import small_config  # noqa: E402


class Rejecting:
    """Every row comes back; clients in ``bad`` rejected with ``reason``."""

    def __init__(self, n: int, bad: set[int], reason: str) -> None:
        self.n, self.bad, self.reason = n, bad, reason

    def run_clients(self, params, plan):
        rows = torch.ones(self.n, 2)
        for c in self.bad:
            rows[c] = float("nan")
        samples = torch.tensor([0 if c in self.bad else 10 for c in plan.client_ids])
        return RoundResults(rows, samples, torch.zeros(self.n), {c: self.reason for c in self.bad})


class Byzantine:
    """A simulated adversary controlling ``ids`` that leaves their rows alone."""

    def __init__(self, ids: set[int]) -> None:
        self.ids = frozenset(ids)

    def byzantine_ids(self, round):
        return self.ids

    def poisoned(self, round, ids):
        return frozenset()

    def corrupt_updates(self, updates, ids, usable, round, f, reference, defense):
        return []


def server(n: int, bad: set[int], reason: str, adversary=None) -> Server:
    alg = PSSGD(TrainArgs(learning_rate=1.0), nn.Linear(2, 1, bias=False), torch.device("cpu"))
    return Server(alg, Rejecting(n, bad, reason), Defense("krum"), adversary,
                  num_clients=n, clients_per_round=n, f=1, seed=0)


@pytest.mark.parametrize("reason", ["non-finite values", "norm 3.1e+14 above the bound 1e+12"])
def test_most_rows_rejected_for_their_values_is_divergence(reason):
    srv = server(7, bad={0, 1, 2, 3, 4, 5}, reason=reason)  # one row left: Krum cannot run
    with pytest.raises(ModelDivergedError, match="round 0: the model has diverged: the "
                       "updates of 6 of the 7 clients") as info:
        srv.round(torch.zeros(2), 0)
    assert info.value.round == 0


def test_absent_clients_are_not_divergence():
    srv = server(7, bad={0, 1, 2, 3, 4, 5}, reason="timeout: rank 1 lost")
    with pytest.raises(RoundFailedError, match="bring clients back"):
        srv.round(torch.zeros(2), 0)


def test_byzantine_garbage_is_not_divergence():
    # the six rejected rows are the simulated Byzantine clients': the honest model is fine
    srv = server(7, bad={0, 1, 2, 3, 4, 5}, reason="non-finite values",
                 adversary=Byzantine({0, 1, 2, 3, 4, 5}))
    with pytest.raises(RoundFailedError, match="cannot run on the 1 usable rows"):
        srv.round(torch.zeros(2), 0)


def test_a_minority_of_bad_rows_leaves_the_round_to_the_rule():
    srv = server(7, bad={0, 1, 2}, reason="non-finite values")  # Krum runs on 4 rows, f=0
    new, record = srv.round(torch.zeros(2), 0)
    torch.testing.assert_close(new, -torch.ones(2))
    assert sorted(record.rejected) == [0, 1, 2]


def _diverging(tmp_path: Path) -> dict:
    # an MLP with a learning rate of 1e3: round 1's update is ~7e4, round 2's gradients ~1e13
    return small_config(tmp_path, model_args={"model": "mlp"}, train_args={
        "federated_optimizer": "PS-SGD", "learning_rate": 1e3, "comm_round": 20})


def test_a_diverging_run_ends_with_its_outcome_recorded(tmp_path):
    summary = train(config_from_dict(_diverging(tmp_path)))
    assert summary["diverged_at_round"] == 2
    assert "the model has diverged" in summary["diverged"]
    assert 0.0 <= summary["final_test_accuracy"] < 0.3  # the diverged model, evaluated
    run = Path(summary["run_dir"])
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [0, 1, 2]
    assert lines[-1]["test_accuracy"] == summary["final_test_accuracy"]
    assert "diverged" in lines[-1] and "diverged" not in lines[1]
    assert yaml.safe_load((run / "summary.json").read_text())["diverged_at_round"] == 2


def test_cli_reports_divergence_in_one_line(tmp_path, capsys):
    path = tmp_path / "diverging.yaml"
    path.write_text(yaml.safe_dump(_diverging(tmp_path)))
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("the model diverged at round 2; test accuracy")
