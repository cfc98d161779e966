r"""All of a round's clients in one batched computation, equal to the per-client loop.

The simulator's loop runs :meth:`Algorithm.client_update` once per client; for small models that
is almost all Python and kernel-launch overhead. :class:`BatchedExecutor` computes the same rows
for every client of a round at once:

1. **batches** (:mod:`.batched_plan`): each client's generator is replayed exactly as the loop
   draws it (FedAvg: one ``randperm`` per epoch split into batches; PS-SGD: the first
   ``min(B, n)`` of one ``randperm``); poisoned clients' batches go through the data attack on
   that same generator, in the loop's order. Every shard lives in one cached tensor, so a step's
   batches for all clients are one gather ``pool[idx]`` with ``idx`` of shape ``(k, w)``.
2. **compute** (:mod:`.batched_kernel`): per-client gradients over stacked parameter rows —
   through the model's ``torch.fx`` graph rewritten for a client dimension
   (:mod:`.batched_graph`, one autograd pass) when it has only supported layers, else
   ``vmap(grad(loss))`` — with padded batches masked per sample (weight :math:`1/b_c` on real
   samples, 0 on padding), and ``torch.optim.SGD``'s update written row-wise. Clients are
   sorted by their number of steps, longest first, so the clients still training at a step are
   a prefix of the rows and the others are untouched.
3. **chunks**: at most ``max_clients_per_chunk`` clients are computed together; by default the
   chunk size comes from a memory budget (2 GiB on CPU, a quarter of free GPU memory) and an
   estimate of per-client memory (parameters, gradients, momentum, activations of one batch),
   and on CPU also from a cache budget: a step's working set (3 copies of the parameters and of
   a batch's activations per client) is kept near 48 MB, but at least 4 clients per chunk.

The rows are equal to the loop's up to floating-point rounding (~1e-7 relative). Where that would
not hold the executor declines and the loop runs (logged once at INFO with the reason): models
with floating buffers (batch-norm running statistics, updated per batch and coupling samples),
dropout (the loop draws masks from the global RNG), FedAvg with local Adam, algorithms other than
FedAvg/PS-SGD (or subclasses overriding ``client_update``, or PS-SGD's ``batch_indices``), and
models whose batched gradient fails or differs from autograd's on a probe batch. Clients with no
data, or whose data attack changes a batch's size, run through the loop within a batched round.
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
    SidePool,
    build_schedule,
    client_sequence,
)
from shieldwall.runtime.batched_probe import probe_model

__all__ = ["BatchedExecutor", "unbatchable_reason"]

log = logging.getLogger(__name__)

CPU_BUDGET_BYTES = 2 << 30
"""Memory a chunk may use on CPU (parameters, momentum, gradients, batches, activations)."""
CPU_CACHE_BYTES = 48 << 20
"""Target working set of one step on CPU: past the last-level cache, stacked small-batch
matrix products become memory-bound (measured: MLP best at 16 clients, CNN at 4)."""
MIN_CPU_CHUNK = 4


def _draws_batches_as_pssgd(cls: type) -> bool:
    """Whether ``cls.batch_indices`` is PS-SGD's own draw, the one the batched plan replays (a
    subclass's override or a function patched onto the class is not)."""
    fn = getattr(cls, "batch_indices", None)
    return (getattr(fn, "__module__", None) == PSSGD.__module__
            and getattr(fn, "__qualname__", None) == "PSSGD.batch_indices")


def unbatchable_reason(algorithm: Algorithm) -> str | None:
    """Why ``algorithm``'s clients cannot be batched exactly, or ``None`` if they can."""
    cls = type(algorithm)
    if not (isinstance(algorithm, FedAvg | PSSGD)):
        return f"algorithm {cls.__name__} has no batched form"
    base = FedAvg if isinstance(algorithm, FedAvg) else PSSGD
    if cls.client_update is not base.client_update:
        return f"{cls.__name__} overrides client_update"
    if isinstance(algorithm, PSSGD) and not _draws_batches_as_pssgd(cls):
        return f"{cls.__name__} orders its batches itself (overrides batch_indices)"
    if isinstance(algorithm, FedAvg) and cls.local_loss is not FedAvg.local_loss:
        return f"{cls.__name__} has its own local objective"
    if isinstance(algorithm, FedAvg) and algorithm.args.client_optimizer.lower() != "sgd":
        return f"FedAvg's local optimizer is {algorithm.args.client_optimizer} (only SGD batched)"
    model = algorithm.model
    reason = getattr(model, "unbatchable_reason", None)
    if isinstance(reason, str):
        return reason
    a = algorithm.args
    if isinstance(algorithm, PSSGD) and a.target_batch_size:
        return "PS-SGD accumulates micro-batches (train_args.target_batch_size)"
    if isinstance(algorithm, FedAvg) and (
        a.warmup_steps or a.lr_schedule != "constant" or a.max_grad_norm is not None
    ):
        return "FedAvg's local steps use a learning-rate schedule or gradient clipping"
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
        """Clients per chunk for batches of ``width`` samples (see module docstring)."""
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
        p, act = self._fm.num_params, self._fm.act
        chunk = budget // max(item * (6 * p + width * (2 * in_numel + 3 * act)), 1)
        if device.type == "cpu":  # keep a step's working set near the caches
            working = item * 3 * (p + width * act)
            chunk = min(chunk, max(CPU_CACHE_BYTES // max(working, 1), MIN_CPU_CHUNK))
        return max(int(chunk), 1)

    def run(self, params: Tensor, plan: RoundPlan, out: Tensor) -> list[LocalResult] | None:
        """The round's results in ``plan.client_ids`` order, or ``None`` when the loop must run.

        Batched rows are written into ``out`` ``(n, d)`` (row ``i`` for ``plan.client_ids[i]``)
        and their results' ``update`` are those rows; clients run through the loop return their
        own tensors. Nothing is sanitised here.
        """
        if self.reason is not None or not plan.client_ids:
            return None
        alg, ex = self.executor.algorithm, self.executor
        assert self._fm is not None
        p = self._fm.num_params
        if params.dtype != alg.flat.params[0].dtype or params.shape != (alg.flat.dim,):
            return None
        pool = self._shard_pool(plan.client_ids)
        is_fedavg = isinstance(alg, FedAvg)
        side = SidePool(pool.size)
        seqs: list[ClientSeq] = []
        looped: list[int] = []
        for c in plan.client_ids:
            q = client_sequence(
                ex.shards[c], pool.offset[c], seed=ex.seed, round=plan.round,
                batch_size=alg.args.batch_size, epochs=alg.args.epochs if is_fedavg else None,
                poisoned=c in plan.poisoned_ids, data_attack=ex.data_attack, side=side,
            )
            if q is None:
                looped.append(c)
            else:
                seqs.append(q)
        seqs.sort(key=lambda q: -len(q.lens))  # stable: longest first
        attacked = side.tensors()

        def gather(src: Tensor, idx: Tensor) -> Tensor:
            return src.index_select(0, idx.reshape(-1)).view(*idx.shape, *src.shape[1:])

        def step_data(sched: Schedule, s: int) -> tuple[Tensor, Tensor, Tensor]:
            idx, _, weight = sched.step_indices(s)
            if attacked is None:
                return gather(pool.x, idx), gather(pool.y, idx), weight
            px, py = attacked
            in_side = idx >= pool.size
            own = idx.clamp(max=pool.size - 1)
            x, y = gather(pool.x, own), gather(pool.y, own)
            if bool(in_side.any()):
                x[in_side] = px[idx[in_side] - pool.size]
                y[in_side] = py[idx[in_side] - pool.size]
            return x, y, weight

        results: dict[int, LocalResult] = {}
        theta0 = params[:p]
        width = max((max(q.lens) for q in seqs), default=1)
        size = self.chunk_size(width)
        a = alg.args
        row_of = {c: i for i, c in enumerate(plan.client_ids)}
        alg.model.train()  # as the loop does (matters only to the vmap path)
        for start in range(0, len(seqs), size):
            sched = build_schedule(seqs[start : start + size], params.device)
            if is_fedavg:
                parts, loss = fedavg_chunk(
                    self._fm, theta0, sched, step_data, lr=a.learning_rate,
                    momentum=a.momentum, weight_decay=a.weight_decay,
                )
            else:
                parts, loss = pssgd_chunk(self._fm, theta0, sched, step_data)
            rows = [row_of[c] for c in sched.client_ids]
            self._fm.write_rows(out, rows, parts, minus=theta0 if is_fedavg else None)
            if p < out.shape[1]:
                out[rows, p:] = 0.0
            del parts
            for c, i, m, lo in zip(
                sched.client_ids, rows, sched.num_samples.tolist(), loss.tolist(), strict=True
            ):
                results[c] = LocalResult(out[i], int(m), float(lo))
        for c in looped:
            results[c] = ex.run(params, plan, c)
        return [results[c] for c in plan.client_ids]
