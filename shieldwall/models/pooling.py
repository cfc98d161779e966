r"""``MaxPool2d`` with a faster CPU path; same outputs and gradients, bit for bit.

PyTorch's CPU max-pool kernel for contiguous (NCHW) inputs walks each channel's plane with
scalar code, while the channels-last kernel vectorises across channels: on one core, pooling a
``(32, 64, 24, 24)`` activation by 2 takes about 4.8 ms in NCHW and 0.2 ms in channels-last. The
backward runs the other way round (the NCHW scatter of the gradient is the fast one). So on a
CPU this layer pools a copy of the input in channels-last, keeps the argmax indices (they
address ``h · W + w`` within a plane, whatever the memory layout) and scatters the gradient back
with the NCHW backward kernel. Values and indices are those of the plain kernel, so outputs and
gradients are identical (``tests/test_models.py``). On one core the layer runs 2.6× faster
and one training step of the bucketing paper's CNN (25 workers × 32 images) 1.2× faster
(``benchmarks/pooling.py``, ``docs/benchmarks/pooling.txt``).

The plain ``nn.MaxPool2d`` path is kept wherever the fast one does not apply: not a CPU tensor,
not 4-D, already channels-last, padding, dilation, ``ceil_mode``, ``return_indices``, or inside
a ``torch.func`` transform (``vmap``/``grad``, which the batched simulator uses).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

__all__ = ["MaxPool2d"]


class _ChannelsLastMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> Tensor:
        out, indices = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), list(kernel), list(stride)
        )
        ctx.save_for_backward(indices.contiguous())
        ctx.shape, ctx.kernel, ctx.stride = x.shape, kernel, stride
        return out.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (indices,) = ctx.saved_tensors
        # the kernel reads only the input's sizes and layout: an unfilled NCHW tensor will do
        like = grad.new_empty(ctx.shape)
        grad_input = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), like, list(ctx.kernel), list(ctx.stride), [0, 0], [1, 1], False,
            indices,
        )
        return grad_input, None, None


class MaxPool2d(nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` (same arguments and results) with the faster CPU path of the
    module docstring."""

    def forward(self, x: Tensor) -> Tensor:
        if not self._fast(x):
            return super().forward(x)
        kernel = _pair(self.kernel_size)
        stride = _pair(self.stride if self.stride is not None else self.kernel_size)
        return _ChannelsLastMaxPool.apply(x, kernel, stride)

    def _fast(self, x: Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dim() == 4
            and x.is_floating_point()
            and x.is_contiguous()
            and _pair(self.padding) == (0, 0)
            and _pair(self.dilation) == (1, 1)
            and not self.ceil_mode
            and not self.return_indices
            and not torch._C._are_functorch_transforms_active()
        )
