"""FedOpt's server optimizers and FedProx's proximal term: exact updates on hand-checked cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shieldwall.algorithms.base import ClientData, ClientTask
from shieldwall.algorithms.fedavg import FedAvg
from shieldwall.algorithms.fedopt import FedOpt
from shieldwall.algorithms.fedprox import FedProx
from shieldwall.config.loader import ConfigError
from shieldwall.config.schema import TrainArgs

THETA = torch.tensor([1.0, 2.0], dtype=torch.float64)
DELTA = torch.tensor([0.5, -0.25], dtype=torch.float64)  # pseudo-gradient g = -DELTA


def _fedopt(name: str, lr: float, momentum: float = 0.0) -> FedOpt:
    args = TrainArgs(federated_optimizer="FedOpt", server_optimizer=name, server_lr=lr,
                     server_momentum=momentum)
    return FedOpt(args, nn.Linear(1, 1, bias=True).double(), torch.device("cpu"))


def test_fedopt_sgd_with_lr_one_is_fedavg():
    alg = _fedopt("sgd", 1.0)
    assert torch.allclose(alg.server_step(THETA, DELTA, 0), THETA + DELTA)


def test_fedopt_sgd_momentum_two_steps():
    # buf1 = g, θ1 = θ0 - ηg; buf2 = 0.9 g + g, θ2 = θ1 - 1.9 η g  (g = -Δ)
    alg = _fedopt("sgd", 0.5, momentum=0.9)
    t1 = alg.server_step(THETA, DELTA, 0)
    t2 = alg.server_step(t1, DELTA, 1)
    assert torch.allclose(t1, THETA + 0.5 * DELTA)
    assert torch.allclose(t2, t1 + 0.5 * 1.9 * DELTA)


def test_fedadam_steps_are_lr_times_sign_for_a_constant_pseudo_gradient():
    # bias-corrected m̂ = g and v̂ = g² at every step when g is constant: θ -= η g/(|g| + ε)
    alg = _fedopt("adam", 0.1)
    t = THETA
    for r in range(3):
        t = alg.server_step(t, DELTA, r)
        step = 0.1 * DELTA.abs() / (DELTA.abs() + 1e-8)
        expected = THETA + (r + 1) * torch.sign(DELTA) * step
        assert torch.allclose(t, expected, atol=1e-12)


def test_fedadagrad_first_step():
    alg = _fedopt("adagrad", 0.2)
    got = alg.server_step(THETA, DELTA, 0)
    assert torch.allclose(got, THETA + 0.2 * DELTA / (DELTA.abs() + 1e-10), atol=1e-12)


def test_fedyogi_first_step_by_hand():
    # v0 = τ² = 1e-6; v1 = v0 + 0.01 g² (v0 < g²); m1 = 0.1 g; θ1 = θ0 - η m1/(√v1 + τ)
    alg = _fedopt("yogi", 0.3)
    got = alg.server_step(THETA, DELTA, 0)
    g = -DELTA
    v1 = 1e-6 + 0.01 * g * g
    expected = THETA - 0.3 * 0.1 * g / (v1.sqrt() + 1e-3)
    assert torch.allclose(got, expected, atol=1e-12)
    assert math.isclose(float(got[0]), 1.0 + 0.3 * 0.05 / (math.sqrt(0.002501) + 1e-3))


def test_fedopt_state_is_checkpointed():
    a, b = _fedopt("adam", 0.1), _fedopt("adam", 0.1)
    t1 = a.server_step(THETA, DELTA, 0)
    b.load_state_dict(a.state_dict())
    assert torch.allclose(a.server_step(t1, 2 * DELTA, 1), b.server_step(t1, 2 * DELTA, 1))


def test_fedopt_unknown_server_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="server_optimizer.*yogii"):
        _fedopt("yogii", 1.0)


def _local_update(cls: type, mu: float, eta: float) -> torch.Tensor:
    args = TrainArgs(learning_rate=eta, batch_size=1, epochs=1, fedprox_mu=mu)
    model = nn.Linear(1, 2, bias=False).double()
    alg = cls(args, model, torch.device("cpu"))
    data = ClientData(0, torch.ones(2, 1, dtype=torch.float64), torch.zeros(2, dtype=torch.long))
    params = torch.zeros(2, dtype=torch.float64)
    return alg.client_update(params, data, ClientTask(0, 0, 0)).update


def test_fedprox_two_local_steps_by_hand():
    # w0 = 0; step 1: CE gradient (p - e_y)·x = [-1/2, 1/2], prox gradient 0 → w1 = η[1/2, -1/2];
    # step 2: CE gradient [σ(η) - 1, 1 - σ(η)] plus μ(w1 - w0) → w2 = w1 - η(that).
    eta, mu = 0.5, 0.8
    p0 = 1 / (1 + math.exp(-eta))
    w1 = torch.tensor([eta / 2, -eta / 2], dtype=torch.float64)
    ce = torch.tensor([p0 - 1, 1 - p0], dtype=torch.float64)
    fedavg = w1 - eta * ce
    fedprox = w1 - eta * (ce + mu * w1)
    assert torch.allclose(_local_update(FedAvg, 0.0, eta), fedavg, atol=1e-12)
    assert torch.allclose(_local_update(FedProx, mu, eta), fedprox, atol=1e-12)
    assert torch.allclose(_local_update(FedProx, 0.0, eta), fedavg, atol=1e-12)


def test_fedprox_is_not_batched():
    from shieldwall.runtime.batched import unbatchable_reason

    alg = FedProx(TrainArgs(fedprox_mu=0.1), nn.Linear(2, 2), torch.device("cpu"))
    assert "local objective" in unbatchable_reason(alg)


@pytest.mark.parametrize("train_args", [
    {"federated_optimizer": "FedOpt", "server_optimizer": "adam", "server_lr": 0.03},
    {"federated_optimizer": "FedOpt", "server_optimizer": "yogi", "server_lr": 0.03},
    {"federated_optimizer": "FedOpt", "server_optimizer": "sgd", "server_lr": 1.0,
     "server_momentum": 0.5},
    {"federated_optimizer": "FedProx", "fedprox_mu": 0.1},
], ids=["fedadam", "fedyogi", "fedavgm", "fedprox"])
def test_runs_learn(tmp_path, train_args):
    from shieldwall.config import config_from_dict
    from shieldwall.train import train

    raw = {
        "data_args": {"dataset": "digits", "partition_method": "hetero"},
        "train_args": {"client_num_in_total": 8, "comm_round": 5, "batch_size": 16,
                       "learning_rate": 0.05, **train_args},
        "device_args": {"num_threads": 1},
        "validation_args": {"frequency_of_the_test": 5},
        "tracking_args": {"log_file_dir": str(tmp_path), "enable_tensorboard": False},
    }
    summary = train(config_from_dict(raw))
    assert summary["final_test_accuracy"] > 0.8  # FedAvg: 0.88 on this config


def test_hierarchical_fedavg_is_fedavg():
    from shieldwall.algorithms import ALGORITHMS

    for name in ("HierarchicalFedAvg", "HierarchicalFL", "FedAvg_seq"):
        assert ALGORITHMS.get(name) is FedAvg
