"""What one round of training does, independent of where it runs.

An :class:`Algorithm` has a worker half, :meth:`Algorithm.client_update` (from the global state
and a client's data to one update row), and a server half, :meth:`Algorithm.server_step` (from the
aggregated row to the next global state). Runtimes (simulator, torch.distributed, networked)
move the rows between the halves; defenses never subclass an algorithm, they only replace the
aggregation between the halves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldwall.algorithms.flat import FlatModel
from shieldwall.config.schema import TrainArgs

__all__ = [
    "Algorithm", "ClientData", "ClientTask", "LocalResult", "DataAttack", "ModelDivergedError",
    "evaluate",
]

DataAttack = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]
"""A Byzantine worker's data corruption ``(x, y, generator) -> (x, y)`` (label flipping…)."""


class ModelDivergedError(RuntimeError):
    """A round's updates say the *model* has diverged, not its clients: most rows, from clients
    not simulated as Byzantine, are non-finite or beyond ``comm_args.max_update_norm``.

    Training past this point only feeds non-finite numbers to the rule (where the papers' own
    code ends with a NaN model at chance accuracy), so the round loop ends the run here: it
    evaluates the model as it stands and writes the summary with ``diverged_at_round``.
    """

    def __init__(self, message: str, round: int) -> None:
        super().__init__(message)
        self.round = round


@dataclass
class ClientData:
    """One client's training shard (tensors on the training device)."""

    client_id: int
    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class ClientTask:
    """What the server asks of one client in one round.

    Attributes:
        round: the round (FedAvg) or step (PS-SGD), 0-based.
        client_id: which client.
        seed: the run's seed; batches are drawn from ``(seed, round, client_id)``.
        poisoned: apply the data attack to this client's batches this round.
    """

    round: int
    client_id: int
    seed: int
    poisoned: bool = False


@dataclass
class LocalResult:
    """A client's answer: its update row, how many samples it used, its mean training loss."""

    update: Tensor
    num_samples: int
    loss: float


class Algorithm(ABC):
    """Base class of training algorithms (see module docstring).

    Args:
        train_args: the ``train_args`` section (learning rate, batch size, epochs…).
        model: a model instance the worker half trains in place (its state is overwritten from
            the global vector at every call).
        device: where computation happens.
    """

    name: ClassVar[str]
    update_kind: ClassVar[str]
    """``"gradient"`` or ``"model_delta"``: what an update row means (for attacks and metrics)."""

    def __init__(self, train_args: TrainArgs, model: nn.Module, device: torch.device) -> None:
        self.args = train_args
        self.model = model.to(device)
        self.flat = FlatModel(self.model)
        self.device = device

    @abstractmethod
    def client_update(
        self,
        params: Tensor,
        data: ClientData,
        task: ClientTask,
        data_attack: DataAttack | None = None,
    ) -> LocalResult:
        """Worker half: one update row of length ``self.flat.dim`` from global ``params``."""

    @abstractmethod
    def server_step(self, params: Tensor, aggregate: Tensor, round: int) -> Tensor:
        """Server half: the next global vector from the aggregated update."""

    def state_dict(self) -> dict[str, Any]:
        """Server-side state to checkpoint (optimizer moments…)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


def batches(
    data: ClientData, batch_size: int, generator: torch.Generator, *, shuffle: bool = True
) -> list[Tensor]:
    """Index tensors of one epoch's mini-batches over ``data``."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return list(order.split(batch_size))


def apply_data_attack(
    x: Tensor, y: Tensor, data_attack: DataAttack | None, poisoned: bool, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    if poisoned and data_attack is not None:
        return data_attack(x, y, gen)
    return x, y


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1000
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``.

    Token-level targets ``(N, L)`` (masked LM: logits ``(N, V, L)``, ``-100`` where nothing is
    predicted) are averaged over the predicted tokens, and batches hold at most ``batch_size``
    tokens' logits rows (``batch_size // L`` sequences).
    """
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    if y.dim() > 1:
        batch_size = max(1, batch_size // max(int(y[0].numel()), 1))
    for start in range(0, y.shape[0], batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
        counted = target != -100
        correct += int(((logits.argmax(1) == target) & counted).sum())
        count += int(counted.sum())
    model.train(was_training)
    n = max(count, 1)
    return total_loss / n, correct / n
