"""The server's ``f`` when rows are missing: a row that never arrived may have been an honest
client's, so the defense still tolerates ``f`` Byzantine rows among the rest; a malformed row
proves its sender faulty and spends one unit of ``f``. Lowered further only where the rule
cannot run with that ``f``, and then to its largest valid value."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from shieldwall.algorithms.defense import Defense
from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.algorithms.server import RoundFailedError, Server
from shieldwall.config.schema import TrainArgs
from shieldwall.runtime.base import RoundResults


class ScriptedRuntime:
    """Returns the given rows; ``lost`` clients come back rejected with ``reason``."""

    def __init__(self, rows: torch.Tensor, lost: set[int], reason: str) -> None:
        self.rows, self.lost, self.reason = rows, lost, reason

    def run_clients(self, params, plan):
        rows = self.rows.clone()
        for c in self.lost:
            rows[c] = float("nan")
        samples = torch.tensor([0 if c in self.lost else 10 for c in plan.client_ids])
        return RoundResults(rows, samples, torch.zeros(len(rows)),
                            {c: self.reason for c in self.lost})


def server(rows: torch.Tensor, lost: set[int], rule: str, f: int,
           reason: str = "timeout: rank 1 lost") -> Server:
    model = nn.Linear(rows.shape[1], 1, bias=False)
    alg = PSSGD(TrainArgs(learning_rate=1.0), model, torch.device("cpu"))
    return Server(alg, ScriptedRuntime(rows, lost, reason), Defense(rule), None,
                  num_clients=rows.shape[0], clients_per_round=rows.shape[0], f=f, seed=0)


@pytest.mark.parametrize("reason", ["timeout: rank 2 lost in round 0: connection closed",
                                    "absent: fetched the round but sent no row in time"])
def test_missing_honest_rows_do_not_lower_f(reason):
    # 7 clients, f = 2: clients 0-1 Byzantine (huge rows), 2-6 honest (ones); two honest missing
    rows = torch.ones(7, 1)
    rows[:2] = 1e6
    srv = server(rows, lost={5, 6}, rule="trimmed_mean", f=2, reason=reason)
    new, record = srv.round(torch.zeros(1), 0)
    assert record.f == 2
    # trimming 2 from each side of [1e6, 1e6, 1, 1, 1] leaves the honest 1: the step is -1
    torch.testing.assert_close(new, torch.tensor([-1.0]))


def test_each_malformed_row_spends_one_unit_of_f():
    rows = torch.ones(7, 1)
    rows[0] = 1e6
    srv = server(rows, lost={1}, rule="trimmed_mean", f=2, reason="row has NaN/Inf values")
    new, record = srv.round(torch.zeros(1), 0)
    assert record.f == 1
    torch.testing.assert_close(new, torch.tensor([-1.0]))


def test_f_is_lowered_only_to_the_rules_largest_and_logged(caplog):
    rows = torch.randn(7, 3)
    srv = server(rows, lost={4, 5, 6}, rule="krum", f=2)  # 4 rows: Krum needs n >= 2f + 3
    with caplog.at_level(logging.WARNING, logger="shieldwall.algorithms.server"):
        _, record = srv.round(torch.zeros(3), 0)
        _, again = srv.round(torch.zeros(3), 1)
    assert record.f == again.f == 0
    assert caplog.text.count("krum cannot run on 4 usable rows with f=2; using f=0") == 1


def test_a_defense_that_cannot_run_at_all_stops_the_round_in_one_line():
    rows = torch.randn(5, 3)
    srv = server(rows, lost={2, 3, 4}, rule="bulyan", f=1)  # Bulyan needs 3 rows even at f=0
    with pytest.raises(RoundFailedError, match="cannot run on the 2 usable rows even with f=0"):
        srv.round(torch.zeros(3), 0)


def test_largest_f_matches_each_rules_bound():
    assert [Defense(rule).largest_f(10, 5) for rule in ("median", "krum", "bulyan", "mean")] \
        == [4, 3, 1, 5]


def _filtered_rows() -> torch.Tensor:
    """Four honest rows at 0, three Byzantine rows at 1 and three honest outliers far away,
    which the 3σ filter (distance to the geometric median) removes."""
    values = [0.0] * 4 + [1.0] * 3 + [10.0, 10.5, 11.0]
    return torch.tensor(values).unsqueeze(1).repeat(1, 2)


def test_a_filters_removals_do_not_lower_f():
    filt = ("three_sigma", {"score": "geomedian", "bound_param": 2.0})
    rows = _filtered_rows()
    trimmed = Defense("trimmed_mean", preaggregators=[filt])
    # f = 3 still trims the three Byzantine rows among the seven the filter left; lowering f by
    # the three (honest) rows it removed would average the Byzantine rows in (3/7)
    assert torch.equal(trimmed(rows, 3).vector, torch.zeros(2))
    assert torch.allclose(Defense("trimmed_mean", preaggregators=[filt])(rows, 0).vector,
                          torch.full((2,), 3 / 7))


def test_after_a_filter_f_is_lowered_only_to_what_the_rule_can_run(caplog):
    filt = ("three_sigma", {"score": "geomedian", "bound_param": 2.0})
    krum = Defense("krum", preaggregators=[filt])
    with caplog.at_level(logging.WARNING, logger="shieldwall.algorithms.defense"):
        out = krum(_filtered_rows(), 3)  # Krum needs n >= 2f + 3: f = 2 on the 7 rows left
        krum(_filtered_rows(), 3)
    assert torch.equal(out.vector, torch.zeros(2))
    lowered = [r.message for r in caplog.records if "using f=2" in r.message]
    assert len(lowered) == 1, caplog.text  # logged once


def test_the_plan_asks_a_quorum_for_the_rows_the_rule_needs_for_f():
    # a quorum closes a round on the rows that came first, the Byzantine ones (which need not
    # compute) among them: fewer than the rule needs for f would have f lowered on rows that
    # may be mostly Byzantine (7 clients, f = 2, Krum, quorum 3: the aggregate was theirs)
    rows = torch.ones(7, 1)
    expected = {"krum": 7, "median": 5, "trimmed_mean": 5, "mean": 2}
    for rule, floor in expected.items():
        srv = server(rows, lost=set(), rule=rule, f=2)
        assert srv.plan(0).min_accepted == floor, rule
    assert server(torch.ones(4, 1), set(), "krum", f=2).plan(0).min_accepted == 4  # all
