r"""Which samples each client consumes at each local step, for a whole round at once.

The per-client loop (:class:`~shieldwall.algorithms.fedavg.FedAvg`,
:class:`~shieldwall.algorithms.ps_sgd.PSSGD`) draws client :math:`c`'s batches from
``gen_c = torch_generator(seed, "batch", round, c)``:

* FedAvg: for each of :math:`E` epochs one ``randperm(n_c, generator=gen_c)`` split into
  :math:`k_c = \lceil n_c / B \rceil` batches (the last one has :math:`n_c - (k_c - 1)B` samples),
  so :math:`S_c = E k_c` steps;
* PS-SGD: ``randperm(n_c, generator=gen_c)[:min(B, n_c)]``, one step.

A poisoned client applies ``data_attack(x_b, y_b, gen_c)`` to each batch right after drawing it,
on the same generator. Here the same draws are replayed, client by client and in the same
order, so every client sees exactly the loop's batches; a poisoned client's attacked batches are
stored in a side pool.

The result is one index sequence per client (its batches concatenated, in step order) into a
*pool*: indices :math:`< N` address the cached concatenation of every shard
(:class:`ShardPool`), indices :math:`\ge N` the poisoned clients' attacked samples. Step
:math:`s` of client :math:`c` reads ``lens[c, s]`` samples from ``starts[c, s]`` of its sequence;
``lens[c, s] = 0`` once the client is done. Clients are sorted by :math:`S_c`, longest first,
so the clients still training at step :math:`s` are a prefix ``[:active[s]]`` of the order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from shieldwall.algorithms.base import ClientData, DataAttack
from shieldwall.seeding import torch_generator

__all__ = [
    "ShardPool", "SidePool", "ClientSeq", "Schedule", "client_sequence", "build_schedule",
]


class ShardPool:
    """Every client's shard in one tensor: client ``c`` is rows ``offset[c] : offset[c] + n_c``.

    The shards are re-pointed at views of the concatenation, so the data is held once; the pool
    is rebuilt when a shard no longer is such a view (someone replaced its tensors).
    """

    def __init__(self, shards: dict[int, ClientData]) -> None:
        ids = sorted(shards)
        self.x = torch.cat([shards[c].x for c in ids]) if ids else torch.zeros(0)
        self.y = torch.cat([shards[c].y for c in ids]) if ids else torch.zeros(0)
        self.offset: dict[int, int] = {}
        start = 0
        for c in ids:
            n = len(shards[c])
            self.offset[c] = start
            shards[c].x, shards[c].y = self.x[start : start + n], self.y[start : start + n]
            start += n
        self.size = start
        self._views = {c: (shards[c].x, shards[c].y) for c in ids}

    def valid_for(self, shards: dict[int, ClientData], client_ids: tuple[int, ...]) -> bool:
        """Whether the round's clients' shards are still the pooled views."""
        views = self._views
        for c in client_ids:
            pooled, shard = views.get(c), shards.get(c)
            if pooled is None or shard is None or shard.x is not pooled[0]:
                return False
            if shard.y is not pooled[1]:
                return False
        return True


@dataclass
class ClientSeq:
    """One client's round: pool indices in step order and how many samples each step reads."""

    client_id: int
    seq: Tensor
    lens: list[int]
    num_samples: int


class SidePool:
    """Poisoned clients' attacked samples; pool indices start at ``base`` (after the shards)."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.size = 0
        self.xs: list[Tensor] = []
        self.ys: list[Tensor] = []

    def add(self, x: Tensor, y: Tensor) -> None:
        self.xs.append(x)
        self.ys.append(y)
        self.size += int(y.shape[0])

    def tensors(self) -> tuple[Tensor, Tensor] | None:
        return (torch.cat(self.xs), torch.cat(self.ys)) if self.xs else None


def client_sequence(
    data: ClientData,
    offset: int,
    *,
    seed: int,
    round: int,
    batch_size: int,
    epochs: int | None,
    poisoned: bool,
    data_attack: DataAttack | None,
    side: SidePool,
) -> ClientSeq | None:
    """Replay the loop's draws for one client (``epochs=None``: PS-SGD's single batch).

    Attacked batches go to ``side``. ``None`` when the client cannot be batched (no data, or an
    attack that changes a batch's size); the caller runs it through the loop instead.
    """
    n = len(data)
    if n == 0:
        return None
    gen = torch_generator(seed, "batch", round, data.client_id)
    attack = data_attack if poisoned else None
    start = side.base + side.size
    size = min(batch_size, n)
    draws: list[Tensor] = []
    if epochs is None:
        draws.append(torch.randperm(n, generator=gen)[:size])
        if attack is not None and not _attack_into(draws, data, attack, gen, side):
            return None
        lens = [size]
    else:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            draws.append(perm)
            # the loop attacks an epoch's batches right after drawing that epoch's permutation
            if attack is not None and not _attack_into(
                list(perm.split(batch_size)), data, attack, gen, side
            ):
                return None
        full, rest = divmod(n, batch_size)
        lens = ([batch_size] * full + ([rest] if rest else [])) * epochs
    if attack is not None:
        seq = torch.arange(start, side.base + side.size)
    else:
        seq = (torch.cat(draws) if len(draws) > 1 else draws[0]) + offset
    return ClientSeq(data.client_id, seq, lens, size if epochs is None else n)


def _attack_into(
    batch_list: list[Tensor],
    data: ClientData,
    attack: DataAttack,
    gen: torch.Generator,
    side: SidePool,
) -> bool:
    """Attack each batch in order (appending to the side pool); False if a size changed."""
    for idx in batch_list:
        idx = idx.to(data.y.device)
        x0, y0 = data.x[idx], data.y[idx]
        x, y = attack(x0, y0, gen)
        if x.shape != x0.shape or y.shape != y0.shape:
            return False
        side.add(x.to(data.x.dtype), y.to(data.y.dtype))
    return True


@dataclass
class Schedule:
    """A chunk of clients' steps (see module docstring).

    Attributes:
        client_ids: the chunk's clients, longest first.
        seq: their index sequences concatenated; ``seq_off[c]`` is where client ``c``'s starts.
        starts, lens: ``(C, S)`` start (within the client's sequence) and length of each step.
        active: clients still training at each step (a prefix).
        widths: the longest batch at each step (the padded width).
        num_samples, num_steps: ``(C,)`` per client.
    """

    client_ids: list[int]
    seq: Tensor
    seq_off: Tensor
    starts: Tensor
    lens: Tensor
    active: list[int]
    widths: list[int]
    num_samples: Tensor
    num_steps: Tensor
    _steps: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def num_clients(self) -> int:
        return len(self.client_ids)

    def step_indices(self, s: int) -> tuple[Tensor, Tensor, Tensor]:
        """Pool indices ``(k, w)``, real-sample mask and per-sample weight ``1 / lens`` at step
        ``s`` for the ``k`` active clients; padding repeats the batch's last sample."""
        if self._steps is None:
            self._steps = self._all_steps()
        idx, mask, weight = self._steps
        k, w = self.active[s], self.widths[s]
        return idx[s, :k, :w], mask[s, :k, :w], weight[s, :k, :w]

    def _all_steps(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every step's indices, mask and weights ``(S, C, w_max)`` in one computation."""
        lens = self.lens.t()  # (S, C)
        cols = torch.arange(max(self.widths, default=1), device=lens.device)
        mask = cols < lens[..., None]
        pos = torch.minimum(cols, (lens - 1).clamp(min=0)[..., None]) + self.starts.t()[..., None]
        flat = (self.seq_off[:, None] + pos).clamp(max=max(len(self.seq) - 1, 0))
        idx = self.seq[flat] if len(self.seq) else torch.zeros_like(flat)
        weight = mask / lens.clamp(min=1)[..., None]
        return idx, mask, weight


def build_schedule(clients: list[ClientSeq], device: torch.device) -> Schedule:
    """Stack ``clients`` (already sorted longest first) into a :class:`Schedule`."""
    c = len(clients)
    steps = torch.tensor([len(q.lens) for q in clients], dtype=torch.long)
    s_max = int(steps.max()) if c else 0
    lens = torch.zeros((c, s_max), dtype=torch.long)
    for i, q in enumerate(clients):
        lens[i, : len(q.lens)] = torch.tensor(q.lens, dtype=torch.long)
    starts = torch.cumsum(lens, dim=1) - lens
    sizes = torch.tensor([len(q.seq) for q in clients], dtype=torch.long)
    seq_off = torch.cumsum(sizes, 0) - sizes
    active = (steps[:, None] > torch.arange(s_max)[None, :]).sum(0).tolist()
    widths = lens.max(dim=0).values.tolist() if c else []
    return Schedule(
        client_ids=[q.client_id for q in clients],
        seq=torch.cat([q.seq for q in clients]).to(device),
        seq_off=seq_off.to(device),
        starts=starts.to(device),
        lens=lens.to(device),
        active=active,
        widths=widths,
        num_samples=torch.tensor([q.num_samples for q in clients], dtype=torch.float64),
        num_steps=steps,
    )
