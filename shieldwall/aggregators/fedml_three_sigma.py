r"""The 3σ filter: drop rows whose outlier score is far above the others' (FedML's ``3sigma*``).

FedML's ``3sigma``, ``3sigma_foolsgold``, ``3sigma_geo`` and ``3sigma_krum`` defenses score every
client, flag the scores outside :math:`\mu \pm k\sigma` and average the rest. There is no paper
behind them; shieldwall keeps the scores and applies the three-sigma rule with *robust* estimates
of centre and spread (the Hampel identifier; Leys et al. 2013, "Detecting outliers: Do not use
standard deviation around the mean, use absolute deviation around the median", J. Exp. Soc.
Psychol.):

.. math::
    z_i = \frac{s_i - \operatorname{med}(s)}{1.4826\,\operatorname{MAD}(s)},
    \qquad \text{row } i \text{ is dropped when } z_i > k,

with :math:`k` = ``bound_param`` (3 by default: the rule's name). When the MAD is 0 the spread is
:math:`1.2533 \cdot` the mean absolute deviation around the median (Iglewicz & Hoaglin's modified
z-score); when that is 0 too, no row is dropped. The mean and standard deviation FedML uses are
dragged by the very outliers they should expose (a colluding group of more than
:math:`1/(1+k^2)` of the rows is never flagged); the median and MAD are not, and since at least
half the scores lie at or below the median, the filter never drops half the rows or more.

Scores (``score``), each larger for a more suspicious row:

* ``foolsgold`` — the FoolsGold similarity :math:`\max_j cs_{ij}` of the clients' update
  histories after pardoning (see :mod:`.fedml_foolsgold`): sybils pushing one direction score ≈ 1;
* ``geomedian`` — the distance to the geometric median of the round's rows (Weiszfeld);
* ``krum`` — the distance to the mean of the :math:`m = \lceil n/2\rceil - 1` rows with the lowest
  Krum scores (sum of squared distances to their m nearest rows).

A *selecting* pre-aggregation step: it returns the kept rows, and its ``select`` variant their
indices, so sample-count weights and client ids stay aligned with the rows. Each dropped row
counts as one of the f Byzantine rows for the stages after it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from shieldwall.aggregators.base import check_updates
from shieldwall.aggregators.fedml_foolsgold import ClientMemory, pardoned_similarity
from shieldwall.preaggregators import PREAGGREGATORS

__all__ = [
    "three_sigma",
    "three_sigma_keep",
    "robust_outliers",
    "outlier_scores",
    "weiszfeld",
    "ThreeSigmaState",
    "SCORES",
]

SCORES = ("foolsgold", "geomedian", "krum")


def _median(x: Tensor) -> Tensor:
    return torch.quantile(x, 0.5)  # the average of the two middle values for even n


def robust_outliers(scores: Tensor, bound_param: float = 3.0) -> Tensor:
    """Boolean mask of scores more than ``bound_param`` robust standard deviations above the median.

    >>> robust_outliers(torch.tensor([0.2, 0.3, 0.25, 0.35, 0.3, 0.95, 1.0])).tolist()
    [False, False, False, False, False, True, True]
    """
    if bound_param <= 0:
        raise ValueError(f"three_sigma: bound_param must be > 0, got {bound_param}")
    s = scores.to(torch.float64)
    med = _median(s)
    deviation = (s - med).abs()
    scale = 1.4826 * _median(deviation)
    if float(scale) == 0.0:
        scale = 1.2533 * deviation.mean()
    if float(scale) == 0.0:
        return torch.zeros_like(s, dtype=torch.bool)
    return (s - med) / scale > bound_param


def weiszfeld(rows: Tensor, *, iterations: int = 100, eps: float = 1e-8) -> Tensor:
    """Geometric median of ``rows`` (Weiszfeld's iterations, distances floored at ``eps``)."""
    z = rows.mean(dim=0)
    for _ in range(iterations):
        dist = torch.linalg.vector_norm(rows - z, dim=1).clamp_min(eps)
        w = 1.0 / dist
        z_next = (w @ rows) / w.sum()
        if float(torch.linalg.vector_norm(z_next - z)) <= eps * (1.0 + float(z.norm())):
            return z_next
        z = z_next
    return z


def _krum_center(rows: Tensor) -> Tensor:
    n = rows.shape[0]
    m = max(math.ceil(n / 2) - 1, 1)
    if n <= 2:
        return rows.mean(dim=0)
    d2 = torch.cdist(rows, rows).pow(2)
    d2.fill_diagonal_(float("inf"))
    k = min(m, n - 1)
    krum = d2.topk(k, dim=1, largest=False).values.sum(dim=1)
    chosen = krum.topk(m, largest=False).indices
    return rows[chosen].mean(dim=0)


def outlier_scores(rows: Tensor, score: str, history: Tensor | None = None) -> Tensor:
    """One score per row, larger = more suspicious (see the module docstring)."""
    if score == "foolsgold":
        h = rows if history is None else history
        if h.shape[0] < 2:
            return rows.new_zeros(rows.shape[0], dtype=torch.float64)
        return pardoned_similarity(h.to(torch.float64)).max(dim=1).values
    if score == "geomedian":
        x = rows.to(torch.float64)
        return torch.linalg.vector_norm(x - weiszfeld(x), dim=1)
    if score == "krum":
        x = rows.to(torch.float64)
        return torch.linalg.vector_norm(x - _krum_center(x), dim=1)
    raise ValueError(f"three_sigma: unknown score {score!r}; known: {', '.join(SCORES)}")


def three_sigma_keep(
    updates: Tensor,
    f: int = 0,
    *,
    score: str = "foolsgold",
    bound_param: float = 3.0,
    history: Tensor | None = None,
) -> Tensor:
    """Indices (ascending) of the rows the 3σ rule keeps."""
    check_updates(updates)
    flagged = robust_outliers(outlier_scores(updates, score, history), bound_param)
    return (~flagged).nonzero().squeeze(1).to(updates.device)


def three_sigma(
    updates: Tensor,
    f: int = 0,
    *,
    score: str = "foolsgold",
    bound_param: float = 3.0,
    history: Tensor | None = None,
) -> Tensor:
    """The rows the 3σ rule keeps, in order (``f`` is unused).

    Args:
        updates: ``(n, d)`` rows.
        f: ignored.
        score: ``foolsgold``, ``geomedian`` or ``krum``.
        bound_param: k, in robust standard deviations.
        history: ``(n, d)`` clients' accumulated updates for the ``foolsgold`` score (``None``:
            this round's rows).
    """
    keep = three_sigma_keep(updates, f, score=score, bound_param=bound_param, history=history)
    return updates[keep]


class ThreeSigmaState:
    """Per-client update sums for the ``foolsgold`` score; nothing for the other scores."""

    def __init__(self, **params: Any) -> None:
        wanted = params.get("score", "foolsgold") == "foolsgold"
        self.memory = ClientMemory("sum") if wanted else None

    def inputs(self, updates: Tensor, client_ids: Sequence[int] | None) -> dict[str, Any]:
        if self.memory is None or client_ids is None:
            return {}
        stored, _ = self.memory.lookup(updates, client_ids)
        return {"history": stored + updates}

    def commit(self, updates: Tensor, client_ids: Sequence[int] | None) -> None:
        if self.memory is not None and client_ids is not None:
            self.memory.store(updates, client_ids)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.memory is None else self.memory.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.memory is not None and state:
            self.memory.load_state_dict(state)


PREAGGREGATORS.add(
    "three_sigma", three_sigma, aliases=("3sigma_filter", "sigma_filter"),
    select=three_sigma_keep, state=ThreeSigmaState, internal=("history",),
)
