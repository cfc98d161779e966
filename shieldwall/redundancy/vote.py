"""Majority vote per file over its r replicas (DETOX's and ByzShield's filtering step).

Every file f is computed by r workers; honest replicas are the same computation and agree up to
floating-point noise, liars send anything. Two replicas a, b *agree* when every coordinate
satisfies ``|a − b| ≤ atol + rtol · max(|a|, |b|)`` (``torch.isclose`` made symmetric; NaN agrees
with nothing, equal infinities agree). The support of a replica is the number of the file's
replicas it agrees with, itself included.

* **Majority**: if some replica has support > r/2 (at least r′ = ⌊r/2⌋ + 1), the file's voted
  gradient is the value of the replica with the largest support. A value that r′ replicas sent
  bit for bit wins first (honest replicas are one deterministic computation, as DETOX's and
  ByzShield's exact-equality vote assumes): a liar's row within the tolerance of the honest one
  agrees with every replica and would otherwise win a tie of supports by its replica index.
  Remaining ties go to the replica with more exact copies, then to the lowest replica index.
  Its value is returned as sent, not averaged with its supporters.
* **Fallback** (no strict majority: ties such as 1–1 for r = 2 or 2–2 for r = 4, or all replicas
  different): the coordinate-wise median of the replicas — the middle value for an odd count,
  the mean of the two middle values for an even one. NaN (a rejected or lost replica) is left
  out, not sorted as the largest value; a coordinate with no value left is NaN (the file is then
  left out of the aggregation). With ≥ r′ honest replicas this never happens, so the fallback
  only matters when the adversaries split a file's vote or replicas are lost.

Comparison is by value only, never by object identity. The work is vectorised over files and
coordinates; the loop runs over the r(r − 1)/2 replica pairs.

Inputs follow a :class:`~.placement.Placement`: ``grads[k, j]`` is worker k's gradient of its
j-th file ``files_of_worker[k][j]`` — a ``(K, l, d)`` tensor, or the same flattened to
``(K·l, d)``. :func:`vote_replicas` takes the gathered ``(F, r, d)`` replicas directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from shieldwall.redundancy.placement import Placement, majority_threshold

__all__ = ["VoteResult", "majority_vote", "vote_replicas", "gather_replicas", "replicas_agree"]


@dataclass
class VoteResult:
    """Voted file gradients and what the vote saw.

    Attributes:
        voted: ``(F, d)`` voted gradient per file.
        majority_size: ``(F,)`` long, the support of the chosen replica (the largest support
            on fallback files).
        has_majority: ``(F,)`` bool, a strict majority (> r/2) agreed.
        winner: ``(F,)`` long, replica index (0 … r − 1) whose value was taken; −1 on fallback.
        disagreed: ``(F, r)`` bool, replica does not agree with the reference replica (the
            winner, or on fallback the replica of largest support).
        replica_workers: ``(F, r)`` long worker ids of the replicas (``None`` when the replicas
            were given directly without worker ids).
    """

    voted: Tensor
    majority_size: Tensor
    has_majority: Tensor
    winner: Tensor
    disagreed: Tensor
    replica_workers: Tensor | None = None

    @property
    def num_fallback(self) -> int:
        return int((~self.has_majority).sum())

    def disagreeing_workers(self, file: int) -> list[int]:
        """Worker ids (or replica indices when worker ids are unknown) outvoted on ``file``."""
        idx = torch.nonzero(self.disagreed[file]).flatten()
        if self.replica_workers is None:
            return idx.tolist()
        return self.replica_workers[file, idx].tolist()

    def disagreements_per_worker(self, num_workers: int) -> Tensor:
        """``(K,)`` long: on how many files each worker disagreed with its file's reference."""
        if self.replica_workers is None:
            raise ValueError("worker ids unknown: vote with majority_vote(grads, placement)")
        counts = torch.zeros(num_workers, dtype=torch.long)
        return counts.index_add_(
            0, self.replica_workers.flatten(), self.disagreed.flatten().long()
        )


def replicas_agree(a: Tensor, b: Tensor, *, rtol: float, atol: float) -> Tensor:
    """``(..., d) × (..., d) → (...)`` bool: all coordinates close (symmetric ``isclose``).

    ``isclose(a, b) | isclose(b, a)`` is ``|a − b| ≤ atol + rtol · max(|a|, |b|)`` for finite
    values, with non-finite ones close only when equal; written as one pass of each (half the
    time of two ``isclose``).
    """
    diff = (a - b).abs()
    close = (diff <= atol + rtol * torch.maximum(a.abs(), b.abs())) & diff.isfinite()
    return (close | (a == b)).all(dim=-1)


def gather_replicas(grads: Tensor, placement: Placement) -> Tensor:
    """``(K, l, d)`` or ``(K·l, d)`` per-worker file gradients → ``(F, r, d)`` replicas."""
    k, l = placement.num_workers, placement.load
    if grads.dim() == 2:
        if grads.shape[0] != k * l:
            raise ValueError(
                f"flattened gradients need K·l = {k}·{l} = {k * l} rows, got {grads.shape[0]}"
            )
        grads = grads.reshape(k, l, grads.shape[1])
    if grads.dim() != 3 or tuple(grads.shape[:2]) != (k, l):
        raise ValueError(
            f"per-worker file gradients must be (K, l, d) = ({k}, {l}, d) or (K·l, d); "
            f"got {tuple(grads.shape)}"
        )
    return grads[placement.replica_workers, placement.replica_slots]


def _coordinate_median(replicas: Tensor) -> Tensor:
    """``(F, r, d) → (F, d)`` median over the replicas, NaN left out (module docstring)."""
    ordered = replicas.sort(dim=1).values  # NaN sorts last
    count = (~replicas.isnan()).sum(dim=1, keepdim=True)  # (F, 1, d) values per coordinate
    low = ordered.gather(1, ((count - 1).clamp(min=0)) // 2).squeeze(1)
    high = ordered.gather(1, (count // 2).clamp(max=replicas.shape[1] - 1)).squeeze(1)
    median = 0.5 * (low + high)
    return torch.where(count.squeeze(1) > 0, median, torch.full_like(median, float("nan")))


def vote_replicas(replicas: Tensor, *, rtol: float = 1e-5, atol: float = 1e-8) -> VoteResult:
    """Majority vote of ``(F, r, d)`` replicas (rule and fallback in the module docstring)."""
    if replicas.dim() != 3 or replicas.shape[1] < 1:
        raise ValueError(f"replicas must be (F, r, d) with r ≥ 1, got {tuple(replicas.shape)}")
    nf, r, _ = replicas.shape
    agree = torch.eye(r, dtype=torch.bool).expand(nf, r, r).clone()  # (F, r, r)
    exact = agree.clone()  # bit-for-bit equal values (by ==: -0.0 equals 0.0)
    for i in range(r):
        for j in range(i + 1, r):
            e_ij = (replicas[:, i] == replicas[:, j]).all(dim=-1)
            exact[:, i, j] = e_ij
            exact[:, j, i] = e_ij
            # equal values agree; the tolerance is computed only for the files where they differ
            a_ij = e_ij.clone()
            rest = (~e_ij).nonzero().squeeze(1)
            if rest.numel():
                a_ij[rest] = replicas_agree(replicas[rest, i], replicas[rest, j],
                                            rtol=rtol, atol=atol)
            agree[:, i, j] = a_ij
            agree[:, j, i] = a_ij
    # a NaN replica does not even agree with itself
    agree[:, torch.arange(r), torch.arange(r)] = ~replicas.isnan().any(dim=-1)
    exact &= agree[:, torch.arange(r), torch.arange(r)].unsqueeze(2)
    support = agree.sum(dim=2)  # (F, r)
    copies = exact.sum(dim=2)  # (F, r): replicas holding exactly this value, itself included
    need = majority_threshold(r)
    # lexicographic: an exact majority, the largest support, most exact copies, lowest index
    key = (copies >= need).long() * (r + 1) ** 2 + support * (r + 1) + copies
    score = key * r + (r - 1 - torch.arange(r))
    ref = score.argmax(dim=1)
    files = torch.arange(nf)
    size = support[files, ref]
    has_majority = size >= need
    voted = replicas[files, ref]
    if not bool(has_majority.all()):
        fallback = ~has_majority
        voted = voted.clone()
        voted[fallback] = _coordinate_median(replicas[fallback])
    return VoteResult(
        voted=voted,
        majority_size=size,
        has_majority=has_majority,
        winner=torch.where(has_majority, ref, torch.full_like(ref, -1)),
        disagreed=~agree[files, ref],
    )


def majority_vote(
    grads: Tensor, placement: Placement, *, rtol: float = 1e-5, atol: float = 1e-8
) -> VoteResult:
    """Vote every file of ``placement`` from the per-worker file gradients ``grads``.

    Args:
        grads: ``(K, l, d)`` with ``grads[k, j]`` = worker k's gradient of
            ``placement.files_of_worker[k][j]``, or the same as ``(K·l, d)``.
        placement: who holds which file.
        rtol, atol: agreement tolerance (see module docstring).

    Returns:
        :class:`VoteResult` with ``voted`` of shape ``(F, d)`` and worker ids attached.
    """
    result = vote_replicas(gather_replicas(grads, placement), rtol=rtol, atol=atol)
    result.replica_workers = placement.replica_workers
    return result
