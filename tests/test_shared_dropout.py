"""``train_args.shared_dropout_rounds``: every client of a round draws the same dropout masks
(the bucketing paper's code), redrawn every k rounds, without touching the global RNG."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shieldwall.algorithms.base import ClientData
from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.config import config_from_dict
from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import TrainArgs
from shieldwall.runtime.base import ClientExecutor, RoundPlan

CPU = torch.device("cpu")


def executor(period: int) -> ClientExecutor:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 3))
    alg = PSSGD(TrainArgs(batch_size=1, shared_dropout_rounds=period), model, CPU)
    x, y = torch.randn(1, 8), torch.tensor([1])
    # two clients holding the same single sample: their gradients differ only by the masks
    return ClientExecutor(alg, {0: ClientData(0, x, y), 1: ClientData(1, x.clone(), y)}, seed=3)


def grads(ex: ClientExecutor, round: int) -> tuple[torch.Tensor, torch.Tensor]:
    params = ex.algorithm.flat.vector()
    plan = RoundPlan(round, (0, 1))
    return ex.run(params, plan, 0).update, ex.run(params, plan, 1).update


def test_one_mask_per_round_redrawn_every_k_rounds():
    ex = executor(period=3)
    state = torch.get_rng_state()
    a0, b0 = grads(ex, 0)
    torch.testing.assert_close(a0, b0, rtol=0, atol=0)  # same round: same masks
    a2, _ = grads(ex, 2)
    torch.testing.assert_close(a0, a2, rtol=0, atol=0)  # same period (rounds 0-2)
    a3, b3 = grads(ex, 3)
    torch.testing.assert_close(a3, b3, rtol=0, atol=0)
    assert not torch.equal(a0, a3)  # the next period draws new masks
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was


def test_default_draws_masks_per_client():
    a, b = grads(executor(period=0), 0)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "many"])
def test_bad_period_is_one_clear_error(bad):
    raw = {"data_args": {"dataset": "digits"}, "train_args": {"shared_dropout_rounds": bad}}
    with pytest.raises(ConfigError, match="train_args.shared_dropout_rounds"):
        config_from_dict(raw)


def test_btard_oracle_draws_the_same_masks_as_the_simulator():
    from shieldwall.btard.common import GradientOracle

    ex = executor(period=2)
    oracle = GradientOracle(ex.algorithm, ex.shards, seed=ex.seed)
    params = ex.algorithm.flat.vector()
    state = torch.get_rng_state()
    for r in (0, 1, 2):
        for peer in (0, 1):
            torch.testing.assert_close(
                oracle.compute(params, r, peer).update,
                ex.run(params, RoundPlan(r, (0, 1)), peer).update,
                rtol=0, atol=0,
            )
    assert torch.equal(torch.get_rng_state(), state)
