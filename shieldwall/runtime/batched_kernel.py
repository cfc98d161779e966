r"""The batched local computations: many clients' gradients and SGD steps as one tensor program.

A model's trainable parameters are one flat vector :math:`\theta \in \mathbb{R}^P` (the
:class:`~shieldwall.algorithms.flat.FlatModel` layout); :math:`k` clients' copies are the rows of
:math:`\Theta \in \mathbb{R}^{k \times P}`. One step's batches are gathered into
:math:`X \in \mathbb{R}^{k \times w \times \dots}` (padded to the widest batch :math:`w`) with
weights :math:`\omega_{ci} = [i < b_c] / b_c`, :math:`b_c` the client's real batch size. Each
client's loss

.. math::
    L_c(\theta_c) = \sum_{i < w} \omega_{ci}\, \mathrm{CE}(f(\theta_c; x_{ci}), y_{ci})
    = \frac{1}{b_c} \sum_{i < b_c} \mathrm{CE}(f(\theta_c; x_{ci}), y_{ci})

is the loop's ``F.cross_entropy`` mean over the real samples, so its gradient is the loop's.
``torch.func.vmap(torch.func.grad(L))`` evaluates all :math:`\nabla L_c` at once, through
``torch.func.functional_call`` on the live module (no copies of the model). PS-SGD's clients all
share :math:`\theta_t`, so there the parameters are not batched (``in_dims=None``).

FedAvg's local optimiser is ``torch.optim.SGD`` (dampening 0, no Nesterov), applied row-wise:

.. math::
    g \leftarrow \nabla L_c + \lambda \theta_c, \qquad
    m_c \leftarrow \begin{cases} g & \text{first step} \\ \mu m_c + g & \text{after}\end{cases},
    \qquad \theta_c \leftarrow \theta_c - \eta\, (m_c \text{ if } \mu \ne 0 \text{ else } g).

Clients that have finished (fewer batches) are the rows past the active prefix; they are simply
not touched, so their parameters and momentum stay as the loop leaves them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from shieldwall.runtime.batched_graph import StackedForward
from shieldwall.runtime.batched_plan import Schedule

__all__ = ["FunctionalModel", "StepData", "fedavg_chunk", "pssgd_chunk"]

StepData = Callable[[Schedule, int], tuple[Tensor, Tensor, Tensor]]
"""``(schedule, step) -> (x, y, weight)`` for the active clients, ``(k, w, …)``, ``(k, w)``."""


class FunctionalModel:
    """The module's forward as a pure function of its trainable parameters.

    Parameters travel as a list in ``module.parameters()`` order (the flat-vector order); with
    a leading client dimension they are one client's copy per row. Buffers and frozen
    parameters are read from the module.
    """

    def __init__(self, module: nn.Module, *, use_graph: bool = True) -> None:
        self.module = module
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.num_params = sum(self.sizes)
        self.act = 1
        """Activation values per sample (set by the probe; sizes chunks)."""
        self._per_client = vmap(grad(self.loss, has_aux=True), in_dims=(0, 0, 0, 0))
        self._shared = vmap(grad(self.loss, has_aux=True), in_dims=(None, 0, 0, 0))
        self.stacked = StackedForward.build(module) if use_graph else None
        """The rewritten forward (:mod:`.batched_graph`), or ``None``: ``vmap`` is used."""

    def split(self, flat: Tensor) -> list[Tensor]:
        """``(…, P)`` → one tensor ``(…, *shape)`` per parameter (views where possible)."""
        lead = flat.shape[:-1]
        return [
            part.reshape(*lead, *shape)
            for part, shape in zip(flat.split(self.sizes, dim=-1), self.shapes, strict=True)
        ]

    def flatten(self, parts: list[Tensor]) -> Tensor:
        """Inverse of :meth:`split` for ``(k, *shape)`` parts: ``(k, P)``."""
        return torch.cat([t.reshape(t.shape[0], -1) for t in parts], dim=1)

    def write_rows(
        self, out: Tensor, rows: list[int], parts: list[Tensor], minus: Tensor | None = None
    ) -> None:
        """``out[rows, :P] = flatten(parts) - minus``, without building the flat copy."""
        contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
        at = None if contiguous else torch.tensor(rows, device=out.device)
        offset = 0
        for part, size in zip(parts, self.sizes, strict=True):
            value = part.reshape(len(rows), size)
            if minus is not None:
                value = value - minus[offset : offset + size]
            cols = slice(offset, offset + size)
            if at is None:
                out[rows[0] : rows[0] + len(rows), cols] = value
            else:
                out[at, cols] = value.to(out.dtype)
            offset += size

    def loss(
        self, params: list[Tensor], x: Tensor, y: Tensor, weight: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One client's weighted cross-entropy (see module docstring), twice (value and aux)."""
        logits = functional_call(self.module, dict(zip(self.names, params, strict=True)), (x,))
        loss = (F.cross_entropy(logits, y, reduction="none") * weight).sum()
        return loss, loss.detach()

    def grads(
        self, params: list[Tensor], x: Tensor, y: Tensor, weight: Tensor, *, shared: bool
    ) -> tuple[list[Tensor], Tensor]:
        """Per-client gradients (one ``(k, *shape)`` per parameter) and losses ``(k,)``;
        ``params`` have no client dimension when ``shared``."""
        weight = weight.to(params[0].dtype)
        if self.stacked is not None:
            return self._stacked_grads(params, x, y, weight, shared)
        fn = self._shared if shared else self._per_client
        return fn(params, x, y, weight)

    def _stacked_grads(
        self, params: list[Tensor], x: Tensor, y: Tensor, weight: Tensor, shared: bool
    ) -> tuple[list[Tensor], Tensor]:
        assert self.stacked is not None
        k = x.shape[0]
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(True) for p in params]
            rows = [t.expand(k, *t.shape) for t in leaves] if shared else leaves
            logits = self.stacked(dict(zip(self.names, rows, strict=True)), x)
            ce = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none"
            )
            losses = (ce.view(k, -1) * weight).sum(1)
            grads = torch.autograd.grad(losses.sum(), rows)
        return list(grads), losses.detach()


def fedavg_chunk(
    fm: FunctionalModel,
    theta0: Tensor,
    sched: Schedule,
    step_data: StepData,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> tuple[list[Tensor], Tensor]:
    """Local SGD for a chunk of clients from ``theta0`` ``(P,)``: their final parameters (one
    ``(C, *shape)`` per parameter) and mean per-step losses ``(C,)``."""
    c = sched.num_clients
    theta = [t.expand(c, *t.shape).clone() for t in fm.split(theta0)]
    bufs: list[Tensor] = []
    loss_sum = torch.zeros(c, dtype=torch.float64, device=theta0.device)
    for s in range(len(sched.active)):
        k = sched.active[s]
        x, y, w = step_data(sched, s)
        rows = [t[:k] for t in theta]
        g, loss = fm.grads(rows, x, y, w, shared=False)
        g = [t.contiguous() for t in g]
        loss_sum[:k] += loss.to(torch.float64)
        if weight_decay != 0:
            torch._foreach_add_(g, rows, alpha=weight_decay)
        if momentum != 0:
            if not bufs:  # torch.optim.SGD: the buffer starts as the first step's gradient
                bufs = g  # step 0 has every client active (k == c)
            else:
                buf_rows = [b[:k] for b in bufs]
                torch._foreach_mul_(buf_rows, momentum)
                torch._foreach_add_(buf_rows, g)
                g = buf_rows
        torch._foreach_add_(rows, g, alpha=-lr)
    steps = sched.num_steps.to(device=loss_sum.device, dtype=torch.float64).clamp(min=1)
    return theta, loss_sum / steps


def pssgd_chunk(
    fm: FunctionalModel, theta0: Tensor, sched: Schedule, step_data: StepData
) -> tuple[list[Tensor], Tensor]:
    """One mini-batch gradient per client at the shared ``theta0`` (one ``(C, *shape)`` per
    parameter) and the losses ``(C,)``."""
    x, y, w = step_data(sched, 0)
    g, loss = fm.grads(fm.split(theta0), x, y, w, shared=True)
    return g, loss.to(torch.float64)
