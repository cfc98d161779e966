r"""Federated averaging (McMahan et al., 2017), with a robust aggregator in place of the mean.

Each sampled client starts from the global state :math:`\theta_t`, runs ``epochs`` epochs of local
mini-batch SGD on its shard and sends its model change :math:`\Delta_i = \theta_i - \theta_t`. The
server aggregates the rows and moves (local ``adamw``/``lamb`` start fresh each round; the
warm-up/decay schedule sets each round's local learning rate; ``max_grad_norm`` clips every local
step's gradient):

.. math::
    \theta_{t+1} = \theta_t + \eta_s \, \mathrm{AGG}(\Delta_1, \dots, \Delta_n),

with :math:`\eta_s` = ``server_lr`` (1 in FedAvg). With the plain mean weighted by sample counts
this is FedAvg exactly; aggregating changes rather than weights is equivalent for every rule that
commutes with translation (all of ours) and lets attacks defined on weights (FedML's ``zero``,
``random``, ``flip``) be expressed through ``reference = θ_t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldwall.algorithms import ALGORITHMS
from shieldwall.algorithms.base import (
    Algorithm,
    ClientData,
    ClientTask,
    DataAttack,
    LocalResult,
    apply_data_attack,
    batches,
)
from shieldwall.config.schema import TrainArgs
from shieldwall.optim import build_optimizer, lr_factor
from shieldwall.seeding import torch_generator

__all__ = ["FedAvg"]


@ALGORITHMS.register("FedAvg", aliases=(
    "fedavg", "fed_avg", "fedavg_robust", "FedAvg_seq", "HierarchicalFedAvg", "HierarchicalFL",
))
class FedAvg(Algorithm):
    """Local SGD (or Adam) for ``epochs`` epochs per round; the server adds the aggregate."""

    name = "FedAvg"
    update_kind = "model_delta"

    def __init__(self, train_args: TrainArgs, model: nn.Module, device: torch.device) -> None:
        super().__init__(train_args, model, device)
        if train_args.target_batch_size:
            raise ValueError(
                "train_args.target_batch_size (gradient accumulation) applies to PS-SGD and BTARD; "
                "FedAvg's local steps use batch_size (remove target_batch_size or raise batch_size)"
            )

    def _local_optimizer(self, round: int = 0) -> torch.optim.Optimizer:
        a = self.args
        params = self.flat.params
        if a.client_optimizer.lower() in ("adamw", "lamb") or a.warmup_steps or (
            a.lr_schedule != "constant"
        ):
            lr = a.learning_rate * lr_factor(round, a.warmup_steps, a.comm_round, a.lr_schedule)
            return build_optimizer(params, a, lr=lr)
        if a.client_optimizer.lower() == "adam":
            return torch.optim.Adam(params, lr=a.learning_rate, weight_decay=a.weight_decay)
        return torch.optim.SGD(
            params, lr=a.learning_rate, momentum=a.momentum, weight_decay=a.weight_decay
        )

    def client_update(
        self,
        params: Tensor,
        data: ClientData,
        task: ClientTask,
        data_attack: DataAttack | None = None,
    ) -> LocalResult:
        gen = torch_generator(task.seed, "batch", task.round, task.client_id)
        self.flat.load(params)
        self.model.train()
        optimizer = self._local_optimizer(task.round)
        total_loss, num_batches = 0.0, 0
        for _ in range(self.args.epochs):
            for idx in batches(data, self.args.batch_size, gen):
                idx = idx.to(data.y.device)
                x, y = apply_data_attack(data.x[idx], data.y[idx], data_attack, task.poisoned, gen)
                optimizer.zero_grad(set_to_none=True)
                loss = self.local_loss(self.model(x), y, params)
                loss.backward()
                if self.args.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.flat.params, self.args.max_grad_norm)
                optimizer.step()
                total_loss += float(loss.detach())
                num_batches += 1
        update = self.flat.vector() - params
        return LocalResult(update, len(data), total_loss / max(num_batches, 1))

    def local_loss(self, output: Tensor, y: Tensor, anchor: Tensor) -> Tensor:
        """The local objective of one batch (``anchor``: the round's global vector)."""
        del anchor
        return F.cross_entropy(output, y)

    def server_step(self, params: Tensor, aggregate: Tensor, round: int) -> Tensor:
        return params + self.args.server_lr * aggregate.to(params.dtype)
