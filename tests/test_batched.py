"""The batched simulator equals the per-client loop: whole runs, single rounds, and fall-backs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import shieldwall.algorithms  # noqa: F401  (import order: algorithms before runtime)
from shieldwall.algorithms.base import ClientData
from shieldwall.algorithms.fedavg import FedAvg
from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.config import ConfigError, config_from_dict
from shieldwall.config.schema import TrainArgs
from shieldwall.runtime.base import ClientExecutor, RoundPlan
from shieldwall.runtime.batched import BatchedExecutor
from shieldwall.runtime.simulator import SimulatorRuntime
from shieldwall.train import build_components, train

CPU = torch.device("cpu")


def make_raw(tmp_path: Path, batched: str, **sections: dict) -> dict:
    raw: dict = {
        "common_args": {"random_seed": 3},
        "data_args": {"dataset": "digits", "partition_method": "hetero", "partition_alpha": 0.3,
                      "partition_min_size": 5},
        "model_args": {"model": "lr"},
        "train_args": {"federated_optimizer": "FedAvg", "client_num_in_total": 10,
                       "client_num_per_round": 8, "comm_round": 4, "batch_size": 16,
                       "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
        "device_args": {"num_threads": 1, "batched": batched},
        "validation_args": {"frequency_of_the_test": 100},
        "attack_args": {"enable_attack": True, "attack_type": "label_flip",
                        "byzantine_client_num": 3},
        "tracking_args": {"log_file_dir": str(tmp_path / batched), "enable_tensorboard": False,
                          "progress_bar": False},
    }
    for section, body in sections.items():
        raw.setdefault(section, {}).update(body)
    return raw


def run_config(tmp_path: Path, batched: str, **sections: dict) -> Tensor:
    summary = train(config_from_dict(make_raw(tmp_path, batched, **sections)))
    return torch.load(Path(summary["run_dir"]) / "final_params.pt")


@pytest.mark.parametrize(
    ("algorithm", "model", "extra"),
    [
        ("FedAvg", "lr", {"epochs": 2}),
        ("FedAvg", "mlp", {}),
        ("FedAvg", "lenet", {"comm_round": 2, "client_num_per_round": 4}),
        ("PS-SGD", "lr", {"comm_round": 6}),
        ("PS-SGD", "mlp", {"comm_round": 6, "batch_size": 200}),  # larger than some shards
    ],
)
def test_batched_run_equals_loop(tmp_path, algorithm, model, extra):
    """Dirichlet shards (unequal sizes), momentum, weight decay, label-flipping clients."""
    sections = {"train_args": {"federated_optimizer": algorithm, **extra},
                "model_args": {"model": model}}
    on = run_config(tmp_path, "on", **sections)
    off = run_config(tmp_path, "off", **sections)
    start = build_components(config_from_dict(make_raw(tmp_path, "on", **sections)))
    assert (on - start.initial_params).abs().max() > 1e-3  # it trained
    torch.testing.assert_close(on, off, rtol=0, atol=1e-5)


def test_backdoor_generator_draws_match_the_loop(tmp_path):
    """The backdoor draws its rows from the batch generator, interleaved with the epochs'
    permutations: the batched replay must consume it in the loop's order."""
    sections = {
        "train_args": {"epochs": 2, "comm_round": 3},
        "attack_args": {"attack_type": "backdoor", "poison_fraction": 0.5},
    }
    on = run_config(tmp_path, "on", **sections)
    off = run_config(tmp_path, "off", **sections)
    torch.testing.assert_close(on, off, rtol=0, atol=1e-5)


# --- single rounds through the runtime ---------------------------------------------------------


def make_executor(
    algorithm_cls: type, model: nn.Module, sizes: list[int], **train: object
) -> ClientExecutor:
    torch.manual_seed(0)
    args = TrainArgs(batch_size=4, learning_rate=0.1, **train)  # type: ignore[arg-type]
    alg = algorithm_cls(args, model, CPU)
    gen = torch.Generator().manual_seed(1)
    shards = {
        c: ClientData(c, torch.randn(n, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen))
        for c, n in enumerate(sizes)
    }

    def flip(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return x + torch.randn(x.shape, generator=g), 2 - y

    return ClientExecutor(alg, shards, seed=7, data_attack=flip)


def round_pair(ex: ClientExecutor, plan: RoundPlan, **kw: object) -> tuple:
    params = ex.algorithm.flat.vector()
    batched = SimulatorRuntime(ex, batched="on", **kw).run_clients(params, plan)  # type: ignore
    loop = SimulatorRuntime(ex, batched="off").run_clients(params, plan)
    return batched, loop


def assert_rounds_equal(a, b) -> None:
    torch.testing.assert_close(a.updates, b.updates, rtol=0, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(a.num_samples, b.num_samples)
    torch.testing.assert_close(a.losses, b.losses, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert a.rejected.keys() == b.rejected.keys()


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_fedavg_round_unequal_shards_and_chunks(chunk):
    """Sizes 0…13 with batch 4: padded partial batches, clients stopping early, an empty shard
    (through the loop), poisoned clients with a generator-consuming attack, and chunking."""
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    ex = make_executor(FedAvg, model, [13, 1, 0, 7, 4, 9, 2], momentum=0.5, weight_decay=0.01,
                       epochs=2)
    plan = RoundPlan(2, (6, 0, 1, 2, 3, 5), poisoned_ids=frozenset({0, 5}))
    assert_rounds_equal(*round_pair(ex, plan, max_clients_per_chunk=chunk))


def test_pssgd_round_with_small_and_empty_shards():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    ex = make_executor(PSSGD, model, [13, 1, 0, 7, 3])
    plan = RoundPlan(5, (0, 1, 2, 3, 4), poisoned_ids=frozenset({3}))
    batched, loop = round_pair(ex, plan)
    assert torch.isnan(loop.losses[2])  # an empty batch's mean loss, through the loop
    assert_rounds_equal(batched, loop)


def test_step_weights_average_over_real_samples():
    model = nn.Linear(6, 3)
    ex = make_executor(FedAvg, model, [6, 3])
    batched = BatchedExecutor(ex)
    assert batched.available
    from shieldwall.runtime.batched_plan import SidePool, build_schedule, client_sequence

    pool = batched._shard_pool((0, 1))
    seqs = [
        client_sequence(ex.shards[c], pool.offset[c], seed=0, round=0, batch_size=4, epochs=1,
                        poisoned=False, data_attack=None, side=SidePool(pool.size))
        for c in (0, 1)
    ]
    sched = build_schedule([q for q in seqs if q is not None], CPU)
    assert sched.active == [2, 1]
    idx, mask, weight = sched.step_indices(0)
    assert mask.tolist() == [[True] * 4, [True, True, True, False]]
    torch.testing.assert_close(weight.sum(1), torch.ones(2))
    _, mask1, weight1 = sched.step_indices(1)
    assert mask1.tolist() == [[True, True]] and weight1[0, 0] == 0.5  # width: longest batch


# --- fall-backs --------------------------------------------------------------------------------


class Mixer(nn.Module):
    """Centres the batch: samples interact, so padding changes the real samples' outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x - x.mean(0, keepdim=True))


@pytest.mark.parametrize(
    ("model", "algorithm", "train", "why"),
    [
        (nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)), FedAvg, {},
         "batch-norm"),
        (nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5), nn.Linear(4, 3)), FedAvg, {}, "dropout"),
        (nn.Linear(6, 3), FedAvg, {"client_optimizer": "adam"}, "adam"),
        (Mixer(), PSSGD, {}, "differs from autograd"),
    ],
)
def test_falls_back_with_a_reason(caplog, model, algorithm, train, why):
    ex = make_executor(algorithm, model, [6, 8, 3], **train)
    with caplog.at_level(logging.INFO, logger="shieldwall.runtime.simulator"):
        rt = SimulatorRuntime(ex, batched="auto")
    assert rt.batched is None
    assert any(why in r.getMessage().lower() and r.levelno == logging.INFO for r in caplog.records)
    with pytest.raises(ConfigError, match="batched is on"):
        SimulatorRuntime(ex, batched="on")
    results = rt.run_clients(ex.algorithm.flat.vector(), RoundPlan(0, (0, 1, 2)))
    assert results.updates.shape == (3, ex.dim) and not results.rejected


def test_pssgd_with_server_adam_is_batched():
    ex = make_executor(PSSGD, nn.Linear(6, 3), [5, 8], client_optimizer="adam")
    assert SimulatorRuntime(ex, batched="auto").batched is not None


class ViewNet(nn.Module):
    """``x.view(x.size(0), -1)``: shape arithmetic the graph rewriter leaves to ``vmap``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.fc(x.view(x.size(0), -1)))


@pytest.mark.parametrize("algorithm", [FedAvg, PSSGD])
def test_vmap_path_equals_loop(algorithm):
    ex = make_executor(algorithm, ViewNet(), [9, 2, 6], momentum=0.9)
    rt = SimulatorRuntime(ex, batched="on")
    assert rt.batched is not None and rt.batched._fm is not None
    assert rt.batched._fm.stacked is None  # vmap(grad) path
    plan = RoundPlan(1, (0, 1, 2), poisoned_ids=frozenset({1}))
    assert_rounds_equal(*round_pair(ex, plan))


def test_stacked_path_is_used_for_the_zoo():
    from shieldwall.models import build_model
    from shieldwall.runtime.batched_kernel import FunctionalModel

    for name in ("lr", "mlp", "lenet", "cnn"):
        assert FunctionalModel(build_model(name, (1, 28, 28), 10)).stacked is not None, name


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.0, 0.05), (0.9, 0.0)])
@pytest.mark.parametrize("frozen", [False, True])
def test_sgd_inside_backward_equals_the_loop(momentum, weight_decay, frozen):
    """Linear-only models step inside the backward pass (fused into the weight-gradient
    product); every optimiser branch, and a frozen layer, must still give the loop's rows."""
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    if frozen:
        model[0].weight.requires_grad_(False)
    ex = make_executor(FedAvg, model, [13, 5, 9, 2], momentum=momentum,
                       weight_decay=weight_decay, epochs=2)
    rt = SimulatorRuntime(ex, batched="on")
    assert rt.batched is not None and rt.batched._fm is not None
    assert rt.batched._fm.steps_in_backward
    plan = RoundPlan(1, (0, 1, 2, 3), poisoned_ids=frozenset({1}))
    params = ex.algorithm.flat.vector()
    loop = SimulatorRuntime(ex, batched="off").run_clients(params, plan)
    assert_rounds_equal(rt.run_clients(params, plan), loop)


def test_models_with_convolutions_take_separate_fused_steps():
    from shieldwall.runtime.batched_kernel import FunctionalModel

    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    assert not FunctionalModel(conv).steps_in_backward
    shared = nn.Linear(4, 4)
    assert not FunctionalModel(nn.Sequential(shared, nn.ReLU(), shared)).steps_in_backward
    assert FunctionalModel(nn.Sequential(nn.Linear(4, 4), nn.ReLU())).steps_in_backward
