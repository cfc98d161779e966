"""One flat vector for a model's state.

Workers' updates live in one contiguous ``(n, d)`` tensor, so a model's trainable parameters and
its floating buffers (batch-norm running statistics) are flattened into one vector of length
``d = num_params + num_buffers``: parameters first, buffers after.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FlatModel"]


class FlatModel:
    """Moves a module's state to and from a flat vector.

    Args:
        module: the model; its parameter and buffer *objects* are kept, so load/read are copies
            into and out of the live module.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.buffers = [b for b in module.buffers() if b.is_floating_point()]
        self.num_params = sum(p.numel() for p in self.params)
        self.num_buffers = sum(b.numel() for b in self.buffers)
        self.dim = self.num_params + self.num_buffers

    def vector(self) -> Tensor:
        """Parameters then floating buffers, as one new 1-D tensor."""
        with torch.no_grad():
            return torch.cat([t.detach().reshape(-1) for t in (*self.params, *self.buffers)])

    def buffer_vector(self) -> Tensor:
        with torch.no_grad():
            if not self.buffers:
                return torch.zeros(0)
            return torch.cat([b.detach().reshape(-1) for b in self.buffers])

    def grad_vector(self) -> Tensor:
        """Gradients of the parameters (zeros where a parameter got none)."""
        return torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                for p in self.params
            ]
        )

    def load(self, vector: Tensor) -> None:
        """Copy ``vector`` into the module's parameters and buffers."""
        if vector.numel() != self.dim:
            raise ValueError(f"expected a vector of {self.dim} values, got {vector.numel()}")
        offset = 0
        with torch.no_grad():
            for t in (*self.params, *self.buffers):
                n = t.numel()
                t.copy_(vector[offset : offset + n].view_as(t))
                offset += n
