"""A one-time check that a model's batched gradients equal autograd's, and its activation size.

The batched executor trusts ``vmap(grad(loss))`` only after comparing it, on two tiny clients
(one full batch of two samples, one batch of one real sample plus one padded sample, different
parameters), with plain autograd through the module on the real samples only. Models whose
forward mixes samples (so padding changes the real samples' outputs), draws random numbers or is
not vmappable fail here, and the simulator keeps the per-client loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from shieldwall.algorithms.base import ClientData
from shieldwall.runtime.batched_kernel import FunctionalModel

__all__ = ["probe_model", "activation_numel"]


@torch.no_grad()
def activation_numel(module: nn.Module, x: Tensor) -> int:
    """Values the leaf modules output for one sample ``x`` ``(1, …)`` (for memory estimates)."""
    total = 0

    def hook(_m: nn.Module, _inp: object, out: object) -> None:
        nonlocal total
        if isinstance(out, Tensor):
            total += out.numel()

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        module(x)
    finally:
        for h in handles:
            h.remove()
    return max(total, 1)


def _reference(
    fm: FunctionalModel, theta: Tensor, x: Tensor, y: Tensor, weight: Tensor
) -> Tensor:
    theta = theta.detach().clone().requires_grad_(True)
    params = dict(zip(fm.names, fm.split(theta), strict=True))
    logits = functional_call(fm.module, params, (x,))
    loss = (F.cross_entropy(logits, y, reduction="none") * weight).sum()
    (g,) = torch.autograd.grad(loss, theta)
    return g


def probe_model(fm: FunctionalModel, shards: dict[int, ClientData]) -> str | None:
    """``None`` if batched gradients match autograd on a probe batch, else why not.

    Also sets ``fm.act`` (activation values per sample) for the chunk-size estimate.
    """
    sample = next((d for d in shards.values() if len(d) >= 1), None)
    if sample is None:
        return None
    module = fm.module
    was_training = module.training
    module.train()
    try:
        return _compare(fm, sample.x[:1], sample.y[:1])
    finally:
        module.train(was_training)


def _compare(fm: FunctionalModel, x1: Tensor, y1: Tensor) -> str | None:
    fm.act = activation_numel(fm.module, x1)
    x = torch.cat([x1, x1 * 0.5]).unsqueeze(0).expand(2, -1, *x1.shape[1:])
    y = torch.cat([y1, y1]).unsqueeze(0).expand(2, -1)
    weight = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    theta0 = torch.cat([p.detach().reshape(-1) for p in fm.module.parameters() if p.requires_grad])
    gen = torch.Generator().manual_seed(0)
    thetas = torch.stack([theta0, theta0 + 0.01 * torch.randn(theta0.shape, generator=gen)])
    try:
        batched = fm.flatten(fm.grads(fm.split(thetas), x, y, weight, shared=False)[0])
        shared = fm.flatten(fm.grads(fm.split(theta0), x, y, weight, shared=True)[0])
    except Exception as exc:  # noqa: BLE001 - any failure means "use the loop"
        return f"the model's batched gradient failed ({type(exc).__name__}: {exc})"
    for i in range(2):
        real = weight[i] > 0  # the loop sees only the real samples
        w_i = weight[i][real].to(theta0)
        want = _reference(fm, thetas[i], x[i][real], y[i][real], w_i)
        want_shared = _reference(fm, theta0, x[i][real], y[i][real], w_i)
        scale = float(want.abs().max()) + 1e-12
        if not (
            torch.allclose(batched[i], want, rtol=1e-4, atol=1e-6 * scale)
            and torch.allclose(shared[i], want_shared, rtol=1e-4, atol=1e-6 * scale)
        ):
            return "the model's batched gradient differs from autograd's on a probe batch"
    return None
