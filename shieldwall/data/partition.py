"""Splitting a training set among clients: IID, Dirichlet (LDA) label skew, label-sorted shards.

``partition_indices(labels, num_clients, method)`` returns one int64 index tensor per client; the
parts are disjoint and together cover every sample. Methods (case-insensitive, ``-``/``_`` alike):

* ``iid`` (``homo``, ``homogeneous``, ``uniform``): a random permutation cut into
  ``num_clients`` nearly equal parts (sizes differ by at most one), as FedML's ``homo``.
* ``dirichlet`` (``hetero``, ``non-iid``, ``noniid``): the latent-Dirichlet scheme of
  Hsu et al. 2019 as FedML's ``partition_data(..., "hetero", ...)`` implements it. For each class
  in turn, its shuffled samples are cut among the clients by proportions drawn from
  ``Dir(alpha · 1)``; a client that already holds ``N / num_clients`` samples or more gets a zero
  proportion (FedML's balancing trick, which keeps part sizes from running away). The whole draw is
  repeated until every client holds at least ``min_size`` samples. Small ``alpha`` → strong skew.
* ``document`` (``by_document``, ``documents``, ``by_group``): ``labels`` are group ids (for text,
  the document each block comes from); whole groups go to clients, in a seeded random order,
  each to the client holding the fewest samples so far (ties: the lowest index), so no document
  is shared and parts stay near-balanced. On class labels this gives each client whole classes.

* ``sorted`` (``label_sorted``, ``bucketing``): the non-i.i.d. split of Karimireddy, He & Jaggi
  (ICLR 2022, ``NONIIDLTSampler`` with ``alpha=False`` in their code). The honest clients (all
  but ``byzantine``) get contiguous shards of the training set sorted by label (stable within a
  label, i.e. in data-set order), in client-id order: with ``h`` honest clients each holds
  ``ceil(N / h)`` samples, the list being padded with its own first samples as the paper's sampler
  does, so each honest client sees one or two labels. Each Byzantine client ``j`` (in id order)
  gets the i.i.d. slice ``perm[j mod h :: h]`` of a random permutation (the paper's Byzantine
  workers read the data through a plain ``DistributedSampler`` over ``h`` replicas). Here the
  parts are not disjoint: the Byzantine slices overlap the honest shards, as in the paper. With no
  ``byzantine`` ids every client gets a sorted shard.

Randomness comes from a private ``numpy.random.RandomState(seed)`` (never the global RNG), so a
seed gives the same parts on every run whatever other code draws. FedML seeds NumPy's legacy
global RNG with the same seed and draws in the same order (shuffle, then Dirichlet, per class;
a final shuffle per client), so a FedML user's ``random_seed`` yields exactly FedML's split (a
test checks this against a transcription of FedML's procedure). Two departures, both for
cases where FedML loops forever or divides by zero: after ``max_tries`` draws without reaching
``min_size`` a ValueError is raised, and if every
eligible client's proportion underflows to zero (``alpha`` ≪ 1) the class is cut evenly among them.
As in FedML, cut points are ``floor(cumsum(p) · n_k)``, so rounding remainders drift to the last
clients (a single-sample class goes to the last eligible one, not a random one); ``min_size`` may
then be unreachable for tiny data sets.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from shieldwall.registry import normalize_name

__all__ = [
    "PARTITION_METHODS",
    "canonical_method",
    "partition_indices",
    "iid_partition",
    "dirichlet_partition",
    "group_partition",
    "sorted_partition",
    "class_histogram",
    "format_histogram",
]

#: canonical method → accepted spellings (compared after :func:`normalize_name` and removing ``_``).
PARTITION_METHODS: dict[str, tuple[str, ...]] = {
    "iid": ("iid", "homo", "homogeneous", "uniform"),
    "dirichlet": ("dirichlet", "hetero", "non-iid", "noniid"),
    "document": ("document", "by_document", "documents", "by_group"),
    "sorted": ("sorted", "label_sorted", "bucketing"),
}


def _key(name: str) -> str:
    return normalize_name(name).replace("_", "")


def canonical_method(method: str) -> str:
    """``"iid"`` or ``"dirichlet"`` for any accepted spelling; ValueError listing them otherwise."""
    key = _key(method)
    for canonical, spellings in PARTITION_METHODS.items():
        if key in {_key(s) for s in spellings}:
            return canonical
    valid = ", ".join(f"{c} (also {', '.join(s[1:])})" for c, s in PARTITION_METHODS.items())
    raise ValueError(f"unknown partition method {method!r}; valid methods: {valid}")


def _labels_array(labels: Tensor | np.ndarray) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def iid_partition(
    num_samples: int, num_clients: int, rng: np.random.RandomState
) -> list[np.ndarray]:
    """A random permutation of ``range(num_samples)`` cut into ``num_clients`` near-equal parts."""
    return list(np.array_split(rng.permutation(num_samples), num_clients))


def sorted_partition(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.RandomState,
    byzantine: frozenset[int] = frozenset(),
) -> list[np.ndarray]:
    """The bucketing paper's sorted shards for honest clients, i.i.d. slices for Byzantine ones."""
    honest = [c for c in range(num_clients) if c not in byzantine]
    h = len(honest)
    if h == 0:
        raise ValueError("sorted partition: every client is Byzantine; no one holds sorted shards")
    order = np.argsort(labels, kind="stable")
    size = math.ceil(len(order) / h)
    padded = np.concatenate([order, order[: size * h - len(order)]])
    parts: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * num_clients
    for rank, client in enumerate(honest):
        parts[client] = padded[rank * size:(rank + 1) * size]
    perm = rng.permutation(len(order))
    perm = np.concatenate([perm, perm[: size * h - len(perm)]])
    for j, client in enumerate(sorted(byzantine)):
        parts[client] = perm[j % h::h]
    return parts


def dirichlet_partition(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    min_size: int,
    rng: np.random.RandomState,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """FedML's ``hetero`` LDA partition (see the module docstring); one index array per client."""
    n = len(labels)
    classes = np.unique(labels)
    per_class = [np.flatnonzero(labels == c) for c in classes]
    cap = n / num_clients
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        sizes = np.zeros(num_clients, dtype=np.int64)
        for idx in per_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(num_clients, alpha))
            p = p * (sizes < cap)  # balance: clients at or above N/num_clients get no more
            total = p.sum()
            if total <= 0 or not np.isfinite(total):  # all-tiny draw (alpha ≪ 1): fall back
                p, total = (sizes < cap).astype(float), float((sizes < cap).sum())
            cuts = (np.cumsum(p / total) * len(idx)).astype(np.int64)[:-1]
            for j, chunk in enumerate(np.split(idx, cuts)):
                parts[j].append(chunk)
                sizes[j] += len(chunk)
        if sizes.min() >= min_size:
            return [rng.permutation(np.concatenate(p)) for p in parts]
    raise ValueError(
        f"dirichlet partition: no draw in {max_tries} gave each of {num_clients} clients at least "
        f"{min_size} of {n} samples (alpha={alpha}); raise alpha or lower min_size"
    )


def group_partition(
    groups: np.ndarray, num_clients: int, rng: np.random.RandomState
) -> list[np.ndarray]:
    """Whole groups per client, each group (in a random order) to the currently smallest part."""
    ids, inverse = np.unique(groups, return_inverse=True)
    if len(ids) < num_clients:
        raise ValueError(
            f"document partition: {len(ids)} documents cannot give each of {num_clients} clients "
            "one; use partition_method iid or fewer clients"
        )
    members = [np.flatnonzero(inverse == g) for g in range(len(ids))]
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients, dtype=np.int64)
    for g in rng.permutation(len(ids)):
        j = int(np.argmin(sizes))
        parts[j].append(members[g])
        sizes[j] += len(members[g])
    return [np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in parts]


def partition_indices(
    labels: Tensor,
    num_clients: int,
    method: str,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = 10,
    max_tries: int = 1000,
    byzantine: frozenset[int] | set[int] | tuple[int, ...] = frozenset(),
) -> list[Tensor]:
    """Split the samples with these ``labels`` among ``num_clients`` clients.

    Args:
        labels: ``(N,)`` integer class labels of the training set.
        num_clients: number of parts, ``1 ≤ num_clients ≤ N``.
        method: ``iid``, ``dirichlet`` or ``document`` (or an alias; see
            :data:`PARTITION_METHODS`).
        alpha: Dirichlet concentration (``dirichlet`` only); must be positive.
        seed: seed of the private ``numpy.random.RandomState`` used for every draw.
        min_size: fewest samples a client may get (``dirichlet`` only; ``iid`` parts hold
            ``N // num_clients`` or one more).
        max_tries: Dirichlet redraws before giving up with a ValueError.
        byzantine: Byzantine client ids (``sorted`` only: they get i.i.d. slices instead of
            sorted shards, as in the bucketing paper's code).

    Returns:
        ``num_clients`` int64 index tensors covering ``range(N)``, disjoint except for
        ``sorted`` with Byzantine clients.

    Raises:
        ValueError: unknown method, ``num_clients`` not positive or above N, bad ``alpha`` or
            ``min_size``, or ``num_clients * min_size > N`` for ``dirichlet``.
    """
    canonical = canonical_method(method)
    arr = _labels_array(labels)
    n = len(arr)
    if isinstance(num_clients, bool) or int(num_clients) != num_clients or num_clients <= 0:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    num_clients = int(num_clients)
    if num_clients > n:
        raise ValueError(f"more clients ({num_clients}) than samples ({n}) to split among them")
    rng = np.random.RandomState(seed)
    if canonical == "iid":
        parts = iid_partition(n, num_clients, rng)
    elif canonical == "document":
        parts = group_partition(arr, num_clients, rng)
    elif canonical == "sorted":
        bad = sorted(int(c) for c in byzantine if not 0 <= int(c) < num_clients)
        if bad:
            raise ValueError(f"sorted partition: Byzantine ids {bad} not in [0, {num_clients})")
        parts = sorted_partition(arr, num_clients, rng, frozenset(int(c) for c in byzantine))
    else:
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"dirichlet alpha must be a positive number, got {alpha!r}")
        if min_size < 0:
            raise ValueError(f"min_size must be non-negative, got {min_size}")
        if num_clients * min_size > n:
            raise ValueError(
                f"cannot give each of {num_clients} clients min_size={min_size} samples out of "
                f"{n}; lower min_size or the number of clients"
            )
        parts = dirichlet_partition(arr, num_clients, float(alpha), min_size, rng, max_tries)
    return [torch.from_numpy(np.ascontiguousarray(p, dtype=np.int64)) for p in parts]


def class_histogram(labels: Tensor, parts: list[Tensor], num_classes: int) -> Tensor:
    """``(num_clients, num_classes)`` int64 counts of each class in each client's part."""
    labels = torch.as_tensor(labels).long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels outside [0, {num_classes})")
    rows = [torch.bincount(labels[torch.as_tensor(p).long()], minlength=num_classes) for p in parts]
    if not rows:
        return torch.zeros(0, num_classes, dtype=torch.int64)
    return torch.stack(rows)


def format_histogram(hist: Tensor, max_rows: int = 50) -> str:
    """A plain-text table of :func:`class_histogram` (one row per client, plus totals).

    Columns: client, samples, then one per class. Beyond ``max_rows`` clients the middle rows are
    elided so that a debug log stays readable.
    """
    hist = torch.as_tensor(hist).long()
    if hist.ndim != 2:
        raise ValueError(f"expected a (clients, classes) histogram, got shape {tuple(hist.shape)}")
    num_clients, num_classes = hist.shape
    header = ["client", "n", *(str(c) for c in range(num_classes))]
    body = [
        [str(i), str(int(row.sum())), *(str(int(v)) for v in row)] for i, row in enumerate(hist)
    ]
    if num_clients > max_rows:
        head, tail = max_rows // 2, max_rows - max_rows // 2
        body = [*body[:head], ["..."] * len(header), *body[-tail:]]
    totals = hist.sum(dim=0)
    body.append(["total", str(int(totals.sum())), *(str(int(v)) for v in totals)])
    widths = [max(len(r[k]) for r in (header, *body)) for k in range(len(header))]

    def fmt(row: list[str]) -> str:
        return " ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip()

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(r) for r in body[:-1]), rule, fmt(body[-1])])
