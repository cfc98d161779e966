r"""Centered clipping (CClip).

.. math::
    v^{(t+1)} = v^{(t)} + \frac{1}{n} \sum_{i=1}^n \mathrm{clip}_\tau\bigl(x_i - v^{(t)}\bigr),
    \qquad \mathrm{clip}_\tau(z) = z \cdot \min\Bigl(1, \frac{\tau}{\|z\|_2}\Bigr)

run for ``iterations`` steps from :math:`v^{(0)}` = ``init``. Every row moves the centre by at
most :math:`\tau / n` per step, so ``f`` Byzantine rows move it by at most :math:`f\tau/n`.

Choices (the papers leave them to the user):

* ``init``: the paper's :math:`v^{(0)}` is the previous aggregate (the server momentum); a
  stateful caller passes it. Stateless calls (``init=None``) start from the coordinate-wise
  median, which is robust and keeps the rule translation-equivariant; zeros would bias the result
  toward the origin by up to ``iterations * tau``.
* ``iterations = 5``: the paper's experiments use ``L = 1`` *because* they start from the
  momentum; from the median a few more steps move toward the fixed point (about ``1/n`` of the
  remaining gap per unclipped row and step).
* ``tau = 10.0``: the clipping radius of Karimireddy et al.'s experiments. It is an absolute
  length: set it to a few times the honest rows' spread around their mean for your model (the
  theory takes :math:`\tau \propto \rho / \sqrt{\delta}`); the rule is *not* scale-equivariant.

Each step costs one pass over the rows where numba is installed (the new centre and its
distances to every row from each cache-sized block of columns at once), two matrix-vector
products otherwise (:meth:`~shieldwall.aggregators.base.DistancesToPoint.combine`); no ``(n, d)``
temporary.

References: S. P. Karimireddy, L. He, M. Jaggi, "Learning from History for Byzantine Robust
Optimization", ICML 2021; E. Gorbunov, A. Borzunov, M. Diskin, M. Ryabinin, "Secure Distributed
Training at Scale" (BTARD), ICML 2022.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS
from shieldwall.aggregators.base import DistancesToPoint, check_f, nonfinite_safe
from shieldwall.aggregators.median import coordinate_median

__all__ = ["centered_clip"]


def _check(n: int, f: int, **params) -> None:
    check_f("CenteredClip", n, f, min_n=2 * f + 1, bound="n >= 2f + 1")
    if params.get("tau", 10.0) <= 0:
        raise ValueError(f"CenteredClip needs tau > 0, got tau={params['tau']}")
    if params.get("iterations", 5) < 0:
        raise ValueError(f"CenteredClip needs iterations >= 0, got {params['iterations']}")


@AGGREGATORS.register(
    "centered_clip",
    aliases=("cclip", "centeredclip", "centered_clipping"),
    min_n=lambda f, **_: 2 * f + 1,
)
@nonfinite_safe(check=_check)
def centered_clip(
    updates: Tensor,
    f: int,
    *,
    tau: float = 10.0,
    iterations: int = 5,
    init: Tensor | None = None,
    tol: float | None = None,
) -> Tensor:
    r"""Centered clipping of the rows around a moving centre.

    Args:
        updates: ``(n, d)`` rows, any floating dtype and device (kept).
        f: number of Byzantine rows tolerated; needs :math:`n \ge 2f + 1`. Rows with NaN/Inf
            are dropped first, each one spending one unit of ``f``.
        tau: clipping radius :math:`\tau > 0` (default ``10.0``; see the module notes).
        iterations: number of steps ``L`` (default 5); ``0`` returns the start.
        init: ``(d,)`` starting centre :math:`v^{(0)}`, e.g. the previous aggregate or server
            momentum (default ``None``: the coordinate-wise median of the rows).
        tol: optional early stop when :math:`\|v^{(t+1)} - v^{(t)}\| \le` ``tol`` ``*``
            :math:`\|v^{(t)}\|` (default ``None``: always run ``iterations`` steps).

    Returns:
        ``(d,)``. With ``tau = inf`` one step from any start gives the plain mean.
    """
    n = updates.shape[0]
    if init is None:
        v = coordinate_median(updates)
    else:
        v = torch.as_tensor(init).to(dtype=updates.dtype, device=updates.device).clone()
        if v.shape != updates.shape[1:]:
            raise ValueError(
                f"init must have shape {tuple(updates.shape[1:])}, got {tuple(v.shape)}"
            )
        if not bool(torch.isfinite(v).all()):
            raise ValueError("CenteredClip init must be finite")
    sq_dist = DistancesToPoint(updates, v)
    sq = sq_dist(v)
    for step in range(iterations):
        # scale_i = min(1, tau / ||x_i - v||); a distance of 0 gives tau / 0 = inf -> 1.
        scale = (tau / sq.sqrt_()).clamp_(max=1.0)
        # v + (1/n) sum_i scale_i (x_i - v) = v + ((scale/n) @ x - v * sum(scale)/n)
        previous = v
        last = step == iterations - 1
        v, sq = sq_dist.combine(scale / n, previous, float(scale.sum() / n), distances=not last)
        if tol is not None and float((v - previous).norm()) <= tol * float(previous.norm()):
            break
    return v
