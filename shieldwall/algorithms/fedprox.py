r"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

Each client minimises its loss plus a proximal term that keeps it near the round's global model
:math:`\theta_t`:

.. math::
    h_i(w) = F_i(w) + \frac{\mu}{2}\,\lVert w - \theta_t \rVert^2,

with :math:`\mu` = ``train_args.fedprox_mu``, added to every local mini-batch loss before the
backward pass, as FedML's ``FedProxModelTrainer`` does (over the trainable parameters). The
server is FedAvg's. With :math:`\mu = 0` FedProx is FedAvg.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.algorithms import ALGORITHMS
from shieldwall.algorithms.fedavg import FedAvg

__all__ = ["FedProx"]


@ALGORITHMS.register("FedProx", aliases=("fedprox", "fed_prox"))
class FedProx(FedAvg):
    """FedAvg with the proximal term (μ/2)‖w − θ_t‖² in every local step."""

    name = "FedProx"

    def local_loss(self, output: Tensor, y: Tensor, anchor: Tensor) -> Tensor:
        loss = super().local_loss(output, y, anchor)
        mu = self.args.fedprox_mu
        if mu == 0:
            return loss
        w = torch.cat([p.reshape(-1) for p in self.flat.params])
        return loss + mu / 2 * (w - anchor[: self.flat.num_params]).pow(2).sum()
