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

Memory traffic, not arithmetic, bounds a step at small batches: every client's parameters,
gradients and momentum are read and written once or more per step. :class:`RowSGD` therefore
uses the fused SGD kernel (one pass over parameters, gradient and momentum, the kernel behind
``torch.optim.SGD(fused=True)``), and for models made only of ``nn.Linear`` layers (LR, MLP) the
step happens *inside* the backward pass: the weight gradient :math:`G^\top H` of a layer is
never materialised but accumulated straight into the momentum rows (or, without momentum, into
the parameters) by one ``baddbmm_``, right after the layer's input gradient has used the old
weights. The results equal the separate gradient and update up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.optim.sgd import sgd

from shieldwall.runtime.batched_graph import StackedForward
from shieldwall.runtime.batched_plan import Schedule

__all__ = ["FunctionalModel", "RowSGD", "StepData", "fedavg_chunk", "pssgd_chunk"]

StepData = Callable[[Schedule, int], tuple[Tensor, Tensor, Tensor]]
"""``(schedule, step) -> (x, y, weight)`` for the active clients, ``(k, w, …)``, ``(k, w)``."""


class RowSGD:
    """``torch.optim.SGD`` (dampening 0, no Nesterov) over stacked parameter rows.

    ``theta`` holds one ``(C, *shape)`` tensor per parameter, updated in place; each step
    updates the first ``k`` rows (the clients still training). The momentum buffers are created
    at the first step, which every client takes (``k == C``), as ``torch.optim.SGD`` creates its
    buffer from the first gradient.
    """

    def __init__(
        self, theta: list[Tensor], *, lr: float, momentum: float, weight_decay: float
    ) -> None:
        self.theta = theta
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.bufs: list[Tensor | None] = [None] * len(theta)

    def rows(self, k: int) -> list[Tensor]:
        return [t[:k] for t in self.theta]

    def step(self, k: int, grads: list[Tensor]) -> None:
        """One step of the first ``k`` rows with ``grads`` (one ``(k, *shape)`` per parameter)."""
        bufs: list[Tensor | None] = [None if b is None else b[:k] for b in self.bufs]
        sgd(self.rows(k), grads, bufs, fused=True, weight_decay=self.weight_decay,
            momentum=self.momentum, lr=self.lr, dampening=0.0, nesterov=False, maximize=False)
        if self.momentum != 0 and self.bufs[0] is None:
            self.bufs = bufs  # created by the first step, on all rows

    def step_one(self, i: int, k: int, grad: Tensor) -> None:
        """Parameter ``i``'s step with its gradient ``(k, *shape)`` (small tensors: biases)."""
        theta = self.theta[i][:k]
        d = grad if self.weight_decay == 0 else grad.add(theta, alpha=self.weight_decay)
        if self.momentum != 0:
            buf = self.bufs[i]
            if buf is None:
                self.bufs[i] = buf = d.clone()
            else:
                buf = buf[:k]
                buf.mul_(self.momentum).add_(d)
            d = buf
        theta.add_(d, alpha=-self.lr)

    def step_product(self, i: int, k: int, a: Tensor, b: Tensor) -> None:
        """Parameter ``i``'s step with the gradient ``a @ b`` (batched ``(k, m, n)``), fused
        into the product: ``baddbmm_`` accumulates it into the momentum (or the parameter)."""
        theta = self.theta[i][:k]
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        if mu == 0:  # θ ← θ − η(AB + λθ) = (1 − ηλ)θ − η AB
            theta.baddbmm_(a, b, beta=1.0 - lr * wd, alpha=-lr)
            return
        buf = self.bufs[i]
        if buf is None:  # first step: m ← AB + λθ
            buf = torch.baddbmm(theta, a, b, beta=wd) if wd else torch.bmm(a, b)
            self.bufs[i] = buf
        else:
            buf = buf[:k]
            buf.baddbmm_(a, b, beta=mu)
            if wd:
                buf.add_(theta, alpha=wd)
        theta.add_(buf, alpha=-lr)


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
        self.index = {n: i for i, n in enumerate(self.names)}
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.num_params = sum(self.sizes)
        self.act = 1
        """Activation values per sample (set by the probe; sizes chunks)."""
        self._per_client = vmap(grad(self.loss, has_aux=True), in_dims=(0, 0, 0, 0))
        self._shared = vmap(grad(self.loss, has_aux=True), in_dims=(None, 0, 0, 0))
        self.stacked = StackedForward.build(module) if use_graph else None
        """The rewritten forward (:mod:`.batched_graph`), or ``None``: ``vmap`` is used."""
        self.steps_in_backward = (
            self.stacked is not None and self.stacked.linear_params == set(self.names)
        )
        """Every trainable parameter belongs to one ``nn.Linear`` called once: SGD steps can
        run inside the backward pass (:meth:`sgd_step`)."""

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


    def sgd_step(self, opt: RowSGD, k: int, x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
        """One SGD step of the first ``k`` rows of ``opt.theta`` on ``(x, y, weight)``,
        applied inside the backward pass (needs :attr:`steps_in_backward`); the losses ``(k,)``.
        """
        assert self.stacked is not None and self.steps_in_backward
        weight = weight.to(opt.theta[0].dtype)
        with torch.enable_grad():
            # no parameter requires grad: a token does, so autograd reaches every layer
            token = torch.zeros((), dtype=weight.dtype, device=weight.device, requires_grad=True)
            params = dict(zip(self.names, opt.rows(k), strict=True))
            logits = self.stacked(params, x, step=(opt, self.index, token))
            ce = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none"
            )
            losses = (ce.view(k, -1) * weight).sum(1)
            losses.sum().backward()
        return losses.detach()


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
    opt = RowSGD(theta, lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_sum = torch.zeros(c, dtype=torch.float64, device=theta0.device)
    for s in range(len(sched.active)):
        k = sched.active[s]
        x, y, w = step_data(sched, s)
        if fm.steps_in_backward:
            loss = fm.sgd_step(opt, k, x, y, w)
        else:
            g, loss = fm.grads(opt.rows(k), x, y, w, shared=False)
            opt.step(k, [t.contiguous() for t in g])
        loss_sum[:k] += loss.to(torch.float64)
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
