r"""Many sub-batch gradients in one batched computation.

For :math:`k` sub-batches :math:`X \in \mathbb{R}^{k \times b \times \dots}` (replicas included:
a sub-batch computed by two workers appears twice and is really computed twice, so that the
redundancy costs what it costs on real hardware) and shared parameters :math:`\theta`,

.. math::
    G_{j} = \nabla_\theta \frac{1}{b} \sum_{s < b} \mathrm{CE}(f(\theta; X_{js}), Y_{js}),
    \qquad j < k,

is ``torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))`` through
``functional_call`` on the live module: one batched forward/backward instead of :math:`k`.

Redundancy needs *deterministic* gradients: two honest replicas must agree. Models with dropout
therefore run a loop instead, each sub-batch under a global RNG seeded from ``(seed, step,
batch)``, so every replica (in any process) draws the same mask. Models with floating buffers
(batch-norm running statistics) are refused: those are per-worker state updated by the forward
pass, which replicas would not share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from shieldwall.seeding import derive_seed

__all__ = ["SubBatchGradients", "check_model"]


def check_model(model: nn.Module) -> None:
    """Raise ``ValueError`` for models whose gradients replicas cannot reproduce."""
    if any(b.is_floating_point() for b in model.buffers()):
        raise ValueError(
            "fault-tolerant data parallel needs models without floating buffers (batch-norm "
            "running statistics are per-worker state that replicas do not share); choose e.g. "
            "lr, mlp, cnn or lenet"
        )


def _has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


class SubBatchGradients:
    """Computes ``(k, P)`` gradients and ``(k,)`` losses for ``k`` equal-size sub-batches.

    Args:
        model: the module (its parameters are only read through :meth:`__call__`'s vector).
        seed: the run's seed (dropout masks of the loop path).
    """

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        check_model(model)
        self.model = model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.dim = sum(self.sizes)
        self.seed = seed
        self.batched = not _has_dropout(model)
        self._vgrad = vmap(grad(self._loss, has_aux=True), in_dims=(None, 0, 0))

    def _params(self, flat: Tensor) -> dict[str, Tensor]:
        parts = flat.split(self.sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes)}

    def _loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        loss = F.cross_entropy(functional_call(self.model, params, (x,)), y)
        return loss, loss.detach()

    def __call__(
        self,
        flat: Tensor,
        x: Tensor,
        y: Tensor,
        *,
        step: int = 0,
        batch_ids: list[int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Gradients of the mean loss of each sub-batch ``x[j], y[j]`` at parameters ``flat``.

        Args:
            flat: ``(P,)`` parameter vector (module order).
            x: ``(k, b, …)`` inputs; ``y``: ``(k, b)`` labels.
            step, batch_ids: identify each sub-batch (seed of the loop path's dropout masks).
        """
        self.model.train()
        if x.shape[0] == 0:
            return flat.new_zeros(0, self.dim), flat.new_zeros(0)
        if self.batched:
            grads, losses = self._vgrad(self._params(flat), x, y)
            g = torch.cat([grads[n].reshape(x.shape[0], -1) for n in self.names], dim=1)
            return g, losses
        ids = batch_ids if batch_ids is not None else list(range(x.shape[0]))
        rows, losses = [], []
        params = self._params(flat.detach().requires_grad_(False))
        for j in range(x.shape[0]):
            leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
            with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
                torch.manual_seed(derive_seed(self.seed, "ft-dropout", step, ids[j]))
                loss, _ = self._loss(leaves, x[j], y[j])
            gs = torch.autograd.grad(loss, [leaves[n] for n in self.names])
            rows.append(torch.cat([g.reshape(-1) for g in gs]))
            losses.append(loss.detach())
        return torch.stack(rows), torch.stack(losses)
