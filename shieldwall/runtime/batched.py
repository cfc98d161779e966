r"""All of a round's clients in one batched computation, equal to the per-client loop.

The simulator's loop runs :meth:`Algorithm.client_update` once per client; for small models that
is almost all Python and kernel-launch overhead. :class:`BatchedExecutor` computes the same rows
for every client of a round at once:

1. **batches** (:mod:`.batched_plan`): each client's generator is replayed exactly as the loop
   draws it (FedAvg: one ``randperm`` per epoch split into batches; PS-SGD: the first
   ``min(B, n)`` of one ``randperm``); poisoned clients' batches go through the data attack on
   that same generator, in the loop's order. Every shard lives in one cached tensor, so a step's
   batches for all clients are one gather ``pool[idx]`` with ``idx`` of shape ``(k, w)``.
2. **compute** (:mod:`.batched_kernel`): ``vmap(grad(loss))`` over stacked parameter rows,
   padded batches masked per sample (weight :math:`1/b_c` on real samples, 0 on padding), and
   ``torch.optim.SGD``'s update written row-wise. Clients are sorted by their number of steps,
   longest first, so the clients still training at a step are a prefix of the rows and the
   others are untouched.
3. **chunks**: at most ``max_clients_per_chunk`` clients are computed together; by default the
   chunk size comes from a memory budget (2 GiB on CPU, a quarter of free GPU memory) and an
   estimate of per-client memory (parameters, gradients, momentum, activations of one batch).

The rows are equal to the loop's up to floating-point rounding (~1e-7 relative). Where that would
not hold the executor declines and the loop runs (logged once at INFO with the reason): models
with floating buffers (batch-norm running statistics, updated per batch and coupling samples),
dropout (the loop draws masks from the global RNG), FedAvg with local Adam, algorithms other than
FedAvg/PS-SGD (or subclasses overriding ``client_update``), and models whose batched gradient
fails or differs from autograd's on a probe batch. Clients with no data, or whose data attack
changes a batch's size, run through the loop within a batched round.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from shieldwall.algorithms.base import Algorithm, LocalResult
from shieldwall.algorithms.fedavg import FedAvg
from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.runtime.base import ClientExecutor, RoundPlan
from shieldwall.runtime.batched_kernel import FunctionalModel, fedavg_chunk, pssgd_chunk
from shieldwall.runtime.batched_plan import (
    ClientSeq,
    Schedule,
    ShardPool,
    build_schedule,
    client_sequence,
)
from shieldwall.runtime.batched_probe import probe_model

__all__ = ["BatchedExecutor", "unbatchable_reason"]

log = logging.getLogger(__name__)

CPU_BUDGET_BYTES = 2 << 30


def unbatchable_reason(algorithm: Algorithm) -> str | None:
    """Why ``algorithm``'s clients cannot be batched exactly, or ``None`` if they can."""
    cls = type(algorithm)
    if not (isinstance(algorithm, FedAvg | PSSGD)):
        return f"algorithm {cls.__name__} has no batched form"
    base = FedAvg if isinstance(algorithm, FedAvg) else PSSGD
    if cls.client_update is not base.client_update:
        return f"{cls.__name__} overrides client_update"
    if isinstance(algorithm, FedAvg) and algorithm.args.client_optimizer.lower() != "sgd":
        return f"FedAvg's local optimizer is {algorithm.args.client_optimizer} (only SGD batched)"
    model = algorithm.model
    if algorithm.flat.num_buffers:
        return (
            f"the model has {algorithm.flat.num_buffers} floating buffer values (batch-norm "
            "running statistics), updated per batch"
        )
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return "the model has dropout (the loop draws its masks from the global RNG)"
    dtypes = {p.dtype for p in algorithm.flat.params}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        return f"parameters of dtypes {sorted(map(str, dtypes))} (one floating dtype needed)"
    return None


class BatchedExecutor:
    """Computes a round's rows for all clients at once (see module docstring).

    Args:
        executor: the per-client executor (algorithm, shards, seed, data attack); its loop
            serves the clients that cannot be batched.
        max_clients_per_chunk: clients per batched computation; ``None``: from the budget.
        memory_budget: bytes a chunk may use; ``None``: the default for the device.
    """

    def __init__(
        self,
        executor: ClientExecutor,
        *,
        max_clients_per_chunk: int | None = None,
        memory_budget: int | None = None,
    ) -> None:
        self.executor = executor
        self.max_clients_per_chunk = max_clients_per_chunk
        self.memory_budget = memory_budget
        self._pool: ShardPool | None = None
        self._fm: FunctionalModel | None = None
        self.reason = unbatchable_reason(executor.algorithm)
        if self.reason is None:
            self._fm = FunctionalModel(executor.algorithm.model)
            self.reason = probe_model(self._fm, executor.shards)

    @property
    def available(self) -> bool:
        return self.reason is None

    def _shard_pool(self, client_ids: tuple[int, ...]) -> ShardPool:
        shards = self.executor.shards
        if self._pool is None or not self._pool.valid_for(shards, client_ids):
            self._pool = ShardPool(shards)
        return self._pool

    def chunk_size(self, width: int) -> int:
        """Clients per chunk for batches of ``width`` samples."""
        if self.max_clients_per_chunk:
            return max(int(self.max_clients_per_chunk), 1)
        assert self._fm is not None
        device = self.executor.algorithm.device
        budget = self.memory_budget
        if budget is None:
            budget = CPU_BUDGET_BYTES
            if device.type == "cuda":
                budget = torch.cuda.mem_get_info(device)[0] // 4
        pool = self._pool
        in_numel = pool.x[0].numel() if pool is not None and pool.size else 1
        item = pool.x.element_size() if pool is not None else 4
        per_client = item * (6 * self._fm.num_params + width * (2 * in_numel + self._fm.act))
        return max(int(budget // max(per_client, 1)), 1)

    def run(self, params: Tensor, plan: RoundPlan) -> list[LocalResult] | None:
        """The round's results in ``plan.client_ids`` order (rows not yet sanitised), or
        ``None`` when the loop must run."""
        if self.reason is not None or not plan.client_ids:
            return None
        alg, ex = self.executor.algorithm, self.executor
        assert self._fm is not None
        p = self._fm.num_params
        if params.dtype != alg.flat.params[0].dtype or params.shape != (alg.flat.dim,):
            return None
        pool = self._shard_pool(plan.client_ids)
        is_fedavg = isinstance(alg, FedAvg)
        poison_x: list[Tensor] = []
        poison_y: list[Tensor] = []
        seqs: list[ClientSeq] = []
        looped: list[int] = []
        for c in plan.client_ids:
            q = client_sequence(
                ex.shards[c], pool.offset[c], seed=ex.seed, round=plan.round,
                batch_size=alg.args.batch_size, epochs=alg.args.epochs if is_fedavg else None,
                poisoned=c in plan.poisoned_ids, data_attack=ex.data_attack,
                poison_x=poison_x, poison_y=poison_y, poison_base=pool.size,
            )
            if q is None:
                looped.append(c)
            else:
                seqs.append(q)
        seqs.sort(key=lambda q: -len(q.lens))  # stable: longest first
        px = torch.cat(poison_x) if poison_x else None
        py = torch.cat(poison_y) if poison_y else None

        def gather(src: Tensor, idx: Tensor) -> Tensor:
            return src.index_select(0, idx.reshape(-1)).view(*idx.shape, *src.shape[1:])

        def step_data(sched: Schedule, s: int) -> tuple[Tensor, Tensor, Tensor]:
            idx, _, weight = sched.step_indices(s)
            if px is None or py is None:
                return gather(pool.x, idx), gather(pool.y, idx), weight
            side = idx >= pool.size
            own = idx.clamp(max=pool.size - 1)
            x, y = gather(pool.x, own), gather(pool.y, own)
            if bool(side.any()):
                x[side] = px[idx[side] - pool.size]
                y[side] = py[idx[side] - pool.size]
            return x, y, weight

        results: dict[int, LocalResult] = {}
        theta0 = params[:p]
        width = max((max(q.lens) for q in seqs), default=1)
        size = self.chunk_size(width)
        a = alg.args
        for start in range(0, len(seqs), size):
            sched = build_schedule(seqs[start : start + size], params.device)
            if is_fedavg:
                rows, loss = fedavg_chunk(
                    self._fm, theta0, sched, step_data, lr=a.learning_rate,
                    momentum=a.momentum, weight_decay=a.weight_decay,
                )
            else:
                rows, loss = pssgd_chunk(self._fm, theta0, sched, step_data)
            rows = rows.to(params.dtype)
            for i, (c, m, lo) in enumerate(
                zip(sched.client_ids, sched.num_samples.tolist(), loss.tolist(), strict=True)
            ):
                results[c] = LocalResult(rows[i], int(m), float(lo))
        for c in looped:
            results[c] = ex.run(params, plan, c)
        return [results[c] for c in plan.client_ids]
