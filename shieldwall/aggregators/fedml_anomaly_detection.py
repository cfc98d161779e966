r"""Anomaly detection: a cross-round consistency check that triggers the 3σ filter.

FedML's ``anomaly_detection`` defense (``OutlierDetection``; no paper) runs two checks before
aggregation:

1. *cross-round*: a client is suspicious when its update turned away from its own previous
   accepted update, :math:`1 - \cos(\Delta_{i,t}, \Delta_{i,t'}) >` ``cosine_similarity_bound``
   (a cosine *distance* in [0, 2]; FedML's default 0.3);
2. when any client is suspicious, the 3σ filter with the ``krum`` score (distance to the mean of
   the rows with the best Krum scores, see :mod:`.fedml_three_sigma`) drops the outliers.

In the first round nobody has a previous update and every row is kept. Each client's reference
update is replaced only by updates that passed the cross-round check, so a client cannot drift
away one small step at a time. The memory is kept per client id (:class:`AnomalyDetectionState`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from shieldwall.aggregators.base import check_updates
from shieldwall.aggregators.fedml_foolsgold import ClientMemory
from shieldwall.aggregators.fedml_three_sigma import outlier_scores, robust_outliers
from shieldwall.preaggregators import PREAGGREGATORS

__all__ = ["anomaly_detection", "anomaly_detection_keep", "suspicious", "AnomalyDetectionState"]


def suspicious(
    updates: Tensor, previous: Tensor | None, known: Tensor | None, bound: float
) -> Tensor:
    """Rows whose cosine distance to their client's previous update exceeds ``bound``."""
    n = updates.shape[0]
    if previous is None or known is None:
        return torch.zeros(n, dtype=torch.bool, device=updates.device)
    cos = torch.nn.functional.cosine_similarity(
        updates.to(torch.float64), previous.to(torch.float64), dim=1, eps=1e-12
    )
    return known.to(updates.device) & ((1.0 - cos) > bound)


def anomaly_detection_keep(
    updates: Tensor,
    f: int = 0,
    *,
    cosine_similarity_bound: float = 0.3,
    bound_param: float = 3.0,
    previous: Tensor | None = None,
    known: Tensor | None = None,
) -> Tensor:
    """Indices of the rows kept: all of them unless a cross-round check fails, then the 3σ ones.

    Args:
        updates: ``(n, d)`` rows.
        f: ignored.
        cosine_similarity_bound: cosine distance above which a client's turn is suspicious.
        bound_param: k of the 3σ filter (robust standard deviations).
        previous: ``(n, d)`` each client's previous accepted update (rows where ``known``).
        known: ``(n,)`` booleans, whether ``previous`` holds a row for that client.
    """
    check_updates(updates)
    if not 0.0 <= cosine_similarity_bound <= 2.0:
        raise ValueError(
            f"anomaly_detection: cosine_similarity_bound must be in [0, 2], "
            f"got {cosine_similarity_bound}"
        )
    n = updates.shape[0]
    everyone = torch.arange(n, device=updates.device)
    if not bool(suspicious(updates, previous, known, cosine_similarity_bound).any()):
        return everyone
    flagged = robust_outliers(outlier_scores(updates, "krum"), bound_param).to(updates.device)
    return everyone[~flagged]


def anomaly_detection(
    updates: Tensor,
    f: int = 0,
    *,
    cosine_similarity_bound: float = 0.3,
    bound_param: float = 3.0,
    previous: Tensor | None = None,
    known: Tensor | None = None,
) -> Tensor:
    """The rows :func:`anomaly_detection_keep` keeps, in order."""
    keep = anomaly_detection_keep(
        updates, f, cosine_similarity_bound=cosine_similarity_bound, bound_param=bound_param,
        previous=previous, known=known,
    )
    return updates[keep]


class AnomalyDetectionState:
    """Each client's last update that passed the cross-round check."""

    def __init__(self, **params: Any) -> None:
        self.bound = float(params.get("cosine_similarity_bound", 0.3))
        self.memory = ClientMemory("last")

    def inputs(self, updates: Tensor, client_ids: Sequence[int] | None) -> dict[str, Any]:
        if client_ids is None:
            return {}
        previous, known = self.memory.lookup(updates, client_ids)
        return {"previous": previous, "known": known}

    def commit(self, updates: Tensor, client_ids: Sequence[int] | None) -> None:
        if client_ids is None:
            return
        previous, known = self.memory.lookup(updates, client_ids)
        self.memory.store(updates, client_ids, keep=~suspicious(updates, previous, known,
                                                                self.bound))

    def state_dict(self) -> dict[str, Any]:
        return self.memory.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state)


PREAGGREGATORS.add(
    "anomaly_detection", anomaly_detection, aliases=("outlier_detection",),
    select=anomaly_detection_keep, state=AnomalyDetectionState, internal=("previous", "known"),
)
