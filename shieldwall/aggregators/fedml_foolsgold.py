r"""FoolsGold: down-weight clients whose update *histories* are too similar (sybils).

Fung, Yoon, Beschastnikh (2020), "The Limitations of Federated Learning in Sybil Settings", RAID
(reference code: github.com/DistributedML/FoolsGold). Each client :math:`i` has a history
:math:`H_i = \sum_t \Delta_{i,t}`. With :math:`cs_{ij}` the cosine similarity of :math:`H_i` and
:math:`H_j` (:math:`cs_{ii} := 0`) and :math:`v_i = \max_j cs_{ij}`:

.. math::
    cs_{ij} &\leftarrow cs_{ij}\, v_i / v_j \quad \text{if } v_i < v_j \quad\text{(pardoning)} \\
    \alpha_i &= \operatorname{clip}_{[0,1]}\bigl(1 - \max_j cs_{ij}\bigr),\quad
    \alpha \leftarrow \alpha / \max_k \alpha_k,\quad \alpha_i = 0.99 \text{ where } \alpha_i = 1 \\
    \alpha_i &\leftarrow \operatorname{clip}_{[0,1]}\Bigl(\kappa\bigl(\ln\tfrac{\alpha_i}
        {1-\alpha_i} + 0.5\bigr)\Bigr),
    \qquad \mathrm{AGG} = \frac{1}{n}\sum_i \alpha_i\,\Delta_i

(κ = ``confidence``, 1 in the reference code, which also divides by n rather than by
:math:`\sum_i \alpha_i`). Colluding clients pushing one direction have :math:`cs \approx 1`
and get :math:`\alpha \approx 0`. FoolsGold assumes honest clients' data differ (non-IID): with
near-identical honest updates it is the *honest* clients that look like sybils.

The pure function takes the histories explicitly (``history``, rows aligned with ``updates``);
:class:`FoolsGoldState` keeps them per client id across rounds and is checkpointable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from shieldwall.aggregators import AGGREGATORS
from shieldwall.aggregators.base import check_updates

__all__ = [
    "foolsgold",
    "foolsgold_weights",
    "pardoned_similarity",
    "cosine_matrix",
    "ClientMemory",
    "FoolsGoldState",
]


def cosine_matrix(rows: Tensor) -> Tensor:
    """Pairwise cosine similarities ``(n, n)``; a zero row has similarity 0 with everything."""
    norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    unit = rows / norms.clamp_min(torch.finfo(rows.dtype).tiny)
    return unit @ unit.T


def pardoned_similarity(history: Tensor) -> Tensor:
    """FoolsGold's similarity matrix after pardoning, with a zero diagonal."""
    cs = cosine_matrix(history)
    cs.fill_diagonal_(0.0)
    v = cs.max(dim=1).values
    vi, vj = v.unsqueeze(1), v.unsqueeze(0)
    pardon = vi < vj
    ratio = torch.where(pardon, vi / torch.where(pardon, vj, torch.ones_like(vj)), 1.0)
    return cs * ratio


def foolsgold_weights(history: Tensor, confidence: float = 1.0) -> Tensor:
    """The weights α ∈ [0, 1]ⁿ of the module docstring (computed in float64)."""
    check_updates(history, "history")
    h = history.to(torch.float64)
    if h.shape[0] == 1:
        return history.new_ones(1)
    alpha = (1.0 - pardoned_similarity(h).max(dim=1).values).clamp(0.0, 1.0)
    top = float(alpha.max())
    if top <= 0.0:
        return history.new_zeros(h.shape[0])
    alpha = alpha / top
    alpha = torch.where(alpha == 1.0, torch.full_like(alpha, 0.99), alpha)
    with torch.no_grad():
        logit = confidence * (torch.log(alpha / (1.0 - alpha)) + 0.5)
    logit = torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    return logit.to(history.dtype)


def foolsgold(
    updates: Tensor, f: int = 0, *, history: Tensor | None = None, confidence: float = 1.0
) -> Tensor:
    """FoolsGold's weighted sum ``(1/n) Σ α_i Δ_i`` (``f`` is not used: FoolsGold needs none).

    Args:
        updates: ``(n, d)`` this round's rows.
        f: ignored.
        history: ``(n, d)`` each row's accumulated updates including this round (``None``: this
            round's rows only, i.e. FoolsGold without memory).
        confidence: κ, the logit's scale.

    >>> rows = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> foolsgold(rows, 0).tolist()  # the two identical rows get weight 0
    [0.0, 0.3333333432674408]
    """
    check_updates(updates)
    if confidence <= 0:
        raise ValueError(f"foolsgold: confidence must be > 0, got {confidence}")
    h = updates if history is None else history
    if h.shape != updates.shape:
        raise ValueError(f"foolsgold: history has shape {tuple(h.shape)}, "
                         f"updates {tuple(updates.shape)}")
    alpha = foolsgold_weights(h, confidence).to(dtype=updates.dtype, device=updates.device)
    return (alpha @ updates) / updates.shape[0]


class ClientMemory:
    """Per-client vectors kept across rounds: the running sum (``mode="sum"``) or the last one.

    Rows are matched to clients by id, so clients that skip rounds (sampling, rejected messages)
    keep their own history (FedML's FoolsGold indexes memory by position in the round's list).
    """

    def __init__(self, mode: str = "sum") -> None:
        if mode not in ("sum", "last"):
            raise ValueError(f"ClientMemory mode must be 'sum' or 'last', got {mode!r}")
        self.mode = mode
        self.rows: dict[int, Tensor] = {}

    def lookup(self, updates: Tensor, client_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
        """``(stored, known)``: each client's stored row (zeros if none) and whether it exists."""
        stored = torch.zeros_like(updates)
        known = torch.zeros(updates.shape[0], dtype=torch.bool, device=updates.device)
        for i, c in enumerate(client_ids):
            row = self.rows.get(int(c))
            if row is not None:
                stored[i] = row.to(dtype=updates.dtype, device=updates.device)
                known[i] = True
        return stored, known

    def store(self, updates: Tensor, client_ids: Sequence[int], keep: Tensor | None = None) -> None:
        kept = None if keep is None else keep.tolist()  # one device sync, not one per row
        for i, c in enumerate(client_ids):
            if kept is not None and not kept[i]:
                continue
            row = updates[i].detach().clone()  # stays on the updates' device (no host copy)
            if self.mode == "sum" and int(c) in self.rows:
                row = self.rows[int(c)].to(device=row.device, dtype=row.dtype) + row
            self.rows[int(c)] = row

    def state_dict(self) -> dict[str, Any]:
        ids = sorted(self.rows)
        rows = torch.stack([self.rows[c] for c in ids]) if ids else torch.zeros(0)
        return {"mode": self.mode, "ids": ids, "rows": rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mode = state["mode"]
        self.rows = {int(c): state["rows"][i].clone() for i, c in enumerate(state["ids"])}


class FoolsGoldState:
    """FoolsGold's memory: each client's summed updates (the ``history`` input)."""

    def __init__(self, **params: Any) -> None:
        del params
        self.memory = ClientMemory("sum")

    def inputs(self, updates: Tensor, client_ids: Sequence[int] | None) -> dict[str, Any]:
        if client_ids is None:
            return {}
        stored, _ = self.memory.lookup(updates, client_ids)
        return {"history": stored + updates}

    def commit(self, updates: Tensor, client_ids: Sequence[int] | None) -> None:
        if client_ids is not None:
            self.memory.store(updates, client_ids)

    def state_dict(self) -> dict[str, Any]:
        return self.memory.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state)


AGGREGATORS.add(
    "foolsgold", foolsgold, aliases=("fools_gold",), robust=True, state=FoolsGoldState,
    internal=("history",),
)
