r"""Synchronous SGD with a parameter server (PS-SGD).

Each step every worker computes the gradient of the loss on one mini-batch of its shard at the
current parameters :math:`\theta_t`; the server aggregates the :math:`(n, d)` gradient matrix
with the configured (robust) rule into :math:`\hat g_t` and steps its optimizer:

.. math::
    \theta_{t+1} = \mathrm{opt}(\theta_t, \hat g_t), \qquad
    \hat g_t = \mathrm{AGG}(g_t^{(1)}, \dots, g_t^{(n)}).

This is the setting of Krum (Blanchard et al., 2017), Bulyan (El Mhamdi et al., 2018), DETOX and
ByzShield. Batch-norm running statistics travel as the last ``num_buffers`` entries of each row
(their change during the worker's forward pass) and are aggregated with the gradients.

With ``client_optimizer`` ``adamw``/``lamb``, a warm-up or decay schedule, or ``max_grad_norm``,
the server steps tensor by tensor (:class:`~shieldwall.optim.TensorwiseStepper`: LAMB's trust
ratio is per layer) and clips the aggregate. With ``target_batch_size`` a worker draws that many
samples and accumulates the gradient over micro-batches of ``batch_size`` (weighted by size), so
its row is the gradient of the mean loss over the whole target batch.

Worker momentum (``train_args.worker_momentum`` = β > 0; Karimireddy, He & Jaggi, "Learning from
history for Byzantine robust optimization", ICML 2021, and the bucketing paper, ICLR 2022): each
honest worker ``i`` keeps :math:`m_i \leftarrow \beta m_i + g_i` (first :math:`m_i = g_i`, no
dampening, as the papers' ``MomentumWorker``) and sends :math:`m_i` instead of :math:`g_i`; the
server steps on the aggregate. Byzantine workers' own rows stay raw gradients (in the papers' code
they are plain workers), but omniscient attacks see the honest momenta. The buffers live here,
at the server side of the simulator, and are checkpointed with the optimizer.
"""

from __future__ import annotations

from typing import Any

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
)
from shieldwall.config.schema import TrainArgs
from shieldwall.optim import TensorwiseStepper, needs_stepper
from shieldwall.seeding import torch_generator

__all__ = ["PSSGD"]


@ALGORITHMS.register("PS-SGD", aliases=("pssgd", "ps_sgd", "sgd", "sync_sgd"))
class PSSGD(Algorithm):
    """Parameter-server synchronous SGD; the server steps SGD (momentum, weight decay) or Adam."""

    name = "PS-SGD"
    update_kind = "gradient"

    def __init__(self, train_args: TrainArgs, model: nn.Module, device: torch.device) -> None:
        super().__init__(train_args, model, device)
        self._momenta: dict[int, Tensor] = {}
        self._server_param = nn.Parameter(torch.zeros(self.flat.num_params, device=device))
        self.stepper = TensorwiseStepper(self.flat.params, train_args) if needs_stepper(
            train_args) else None
        if self.stepper is not None:
            self.optimizer = self.stepper.optimizer
        elif train_args.client_optimizer.lower() == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                [self._server_param],
                lr=train_args.learning_rate,
                weight_decay=train_args.weight_decay,
            )
        else:
            self.optimizer = torch.optim.SGD(
                [self._server_param],
                lr=train_args.learning_rate,
                momentum=train_args.momentum,
                weight_decay=train_args.weight_decay,
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
        buffers_before = self.flat.buffer_vector()
        self.model.zero_grad(set_to_none=True)
        if self.args.target_batch_size:
            size, loss = self._accumulate(data, gen, task, data_attack)
        else:
            size = min(self.args.batch_size, len(data))
            idx = self.batch_indices(len(data), size, task, gen).to(data.y.device)
            x, y = apply_data_attack(data.x[idx], data.y[idx], data_attack, task.poisoned, gen)
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
        update = torch.cat([self.flat.grad_vector(), self.flat.buffer_vector() - buffers_before])
        return LocalResult(update.detach(), size, float(loss.detach()))

    def batch_indices(
        self, num_samples: int, size: int, task: ClientTask, gen: torch.Generator
    ) -> Tensor:
        """Which ``size`` of the client's ``num_samples`` samples form its batch this step: the
        first ``size`` of a permutation drawn from ``gen`` (fresh each step, so batches are
        independent draws without replacement within a step). The batched simulator replays
        this draw (:mod:`shieldwall.runtime.batched_plan`) and declines a class whose
        ``batch_indices`` is another (the per-client loop runs it)."""
        return torch.randperm(num_samples, generator=gen)[:size]

    def _accumulate(
        self, data: ClientData, gen: torch.Generator, task: ClientTask,
        data_attack: DataAttack | None,
    ) -> tuple[int, Tensor]:
        """Gradient over ``target_batch_size`` samples in micro-batches; (samples, mean loss)."""
        size = min(int(self.args.target_batch_size), len(data))
        idx = self.batch_indices(len(data), size, task, gen).to(data.y.device)
        total = torch.zeros(())
        for micro in idx.split(self.args.batch_size):
            x, y = apply_data_attack(data.x[micro], data.y[micro], data_attack, task.poisoned,
                                     gen)
            loss = F.cross_entropy(self.model(x), y) * (len(micro) / size)
            loss.backward()
            total = total + loss.detach()
        return size, total

    def server_step(self, params: Tensor, aggregate: Tensor, round: int) -> Tensor:
        p = self.flat.num_params
        if self.stepper is not None:
            new = self.stepper.step(params[:p], aggregate[:p])
            return torch.cat([new.to(params.dtype), params[p:] + aggregate[p:]])
        with torch.no_grad():
            self._server_param.copy_(params[:p])
        self._server_param.grad = aggregate[:p].to(self._server_param.dtype).clone()
        self.optimizer.step()
        new_buffers = params[p:] + aggregate[p:]
        return torch.cat([self._server_param.detach().clone(), new_buffers])

    def worker_momentum_rows(
        self, updates: Tensor, client_ids: tuple[int, ...], honest: list[bool]
    ) -> Tensor:
        """Replace each honest row's gradient part by that worker's momentum (in place)."""
        beta = float(getattr(self.args, "worker_momentum", 0.0) or 0.0)
        if beta == 0.0:
            return updates
        p = self.flat.num_params
        for i, client in enumerate(client_ids):
            if not honest[i]:
                continue
            buf = self._momenta.get(client)
            if buf is None or buf.shape[0] != p:
                buf = updates[i, :p].detach().clone()
            else:
                buf.mul_(beta).add_(updates[i, :p])
            self._momenta[client] = buf
            updates[i, :p] = buf
        return updates

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = (
            {"stepper": self.stepper.state_dict()} if self.stepper is not None
            else {"optimizer": self.optimizer.state_dict()}
        )
        if self._momenta:
            state["worker_momenta"] = {c: m.cpu() for c, m in self._momenta.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the optimizer's moments; its hyper-parameters stay those of the config (a
        resumed run may change the learning rate, momentum or weight decay from its round)."""
        if self.stepper is not None and "stepper" in state:
            self.stepper.load_state_dict(state["stepper"])
        elif "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        configured = {"lr": self.args.learning_rate, "weight_decay": self.args.weight_decay}
        if isinstance(self.optimizer, torch.optim.SGD):
            configured["momentum"] = self.args.momentum
        for group in self.optimizer.param_groups:
            group.update(configured)
        device = self._server_param.device
        self._momenta = {
            int(c): m.to(device) for c, m in state.get("worker_momenta", {}).items()
        }
