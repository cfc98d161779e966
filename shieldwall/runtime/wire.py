"""The wire format of the torch.distributed runtime: fixed-size, self-describing frames.

Server → worker, every round, to every live worker rank (tag :data:`TAG_TASK`):

* a *task header*: ``int64[6 + 2K]`` = ``[MAGIC_TASK, kind, round, k, dim, K, ids[K],
  poisoned[K]]`` where ``K`` is the most clients any rank hosts, ``k ≤ K`` the number this rank
  runs this round (``kind`` is ``ROUND`` or ``STOP``);
* if ``k > 0``, the global vector: ``dim`` values of the run's dtype (tag :data:`TAG_PARAMS`).

Worker → server, one *frame* per client of the round (tag :func:`frame_tag` of round and slot):
a ``uint8`` tensor of exactly :func:`frame_nbytes` = 128 + ``dim · itemsize`` bytes:

* a 128-byte header, ``int64[16]``: ``[MAGIC_FRAME, round, client_id, status, dtype code, ndim,
  shape[4], numel, nbytes, num_samples, loss (float64 bits), 0, 0]``;
* the payload: the row's raw bytes, ``nbytes`` of the ``dim · itemsize`` capacity.

The server receives every frame into a buffer of that fixed capacity whose payload it first fills
with NaN, so it never allocates by a size a peer declares, a short frame leaves NaN (rejected as
non-finite), and a frame for another round or slot cannot match the receive (its tag differs).
:func:`decode_frame` checks the header against the round, the client and the capacity, then the
row through :func:`~shieldwall.runtime.base.sanitize_row`, the sample count and loss through
:func:`~shieldwall.runtime.claims.check_claims` (``max_samples``: the client's shard size); every
failure is a reason string, never an exception. A row that does not fit (an oversize or
wider-dtype tensor) is declared in the header and not sent (``nbytes`` above the capacity:
rejected unread).

Limit: gloo aborts a receiving process when a message is *longer* than the posted buffer (an
enforce in its TCP pair, not an error the caller can catch). :func:`encode_frame` never sends more
than the capacity, so a Byzantine worker running this code cannot trigger it; a peer speaking raw
gloo can, so untrusted peers belong on the networked runtime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from shieldwall.runtime.base import sanitize_row
from shieldwall.runtime.claims import check_claims

__all__ = [
    "MAGIC_TASK",
    "MAGIC_FRAME",
    "ROUND",
    "STOP",
    "OK",
    "FAILED",
    "HEADER_BYTES",
    "TAG_TASK",
    "TAG_PARAMS",
    "Task",
    "DecodedFrame",
    "frame_tag",
    "frame_nbytes",
    "task_header_len",
    "encode_task",
    "decode_task",
    "encode_frame",
    "prepare_frame",
    "decode_frame",
    "DTYPE_CODES",
]

MAGIC_TASK = 0x5357_5441_534B_0001  # "SWTASK", version 1
MAGIC_FRAME = 0x5357_4652_4D00_0001  # "SWFRM", version 1
ROUND, STOP = 1, 2
OK, FAILED = 0, 1
HEADER_WORDS = 16
HEADER_BYTES = HEADER_WORDS * 8
MAX_DIMS = 4
TAG_TASK, TAG_PARAMS = 1, 2
_TAG_FRAMES = 16
_TAG_SPACE = 1 << 30

DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 1, torch.float64: 2, torch.float16: 3, torch.bfloat16: 4, torch.int64: 5,
    torch.int32: 6, torch.int16: 7, torch.int8: 8, torch.uint8: 9, torch.bool: 10,
    torch.complex64: 11, torch.complex128: 12,
}
_CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


def frame_tag(round: int, slot: int, slots: int) -> int:
    """Tag of the frame of ``slot`` (0-based index among a rank's clients) in ``round``."""
    return _TAG_FRAMES + (round * slots + slot) % _TAG_SPACE


def frame_nbytes(dim: int, dtype: torch.dtype) -> int:
    """Size in bytes of every frame of a run whose rows are ``dim`` values of ``dtype``."""
    return HEADER_BYTES + dim * _itemsize(dtype)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class Task:
    """A decoded task header: what a worker rank runs this round."""

    kind: int
    round: int
    client_ids: tuple[int, ...]
    poisoned: frozenset[int]


def task_header_len(slots: int) -> int:
    return 6 + 2 * slots


def encode_task(
    kind: int, round: int, client_ids: list[int], poisoned: set[int] | frozenset[int],
    dim: int, slots: int,
) -> Tensor:
    """The ``int64`` task header (CPU) for one worker rank."""
    if len(client_ids) > slots:
        raise ValueError(f"{len(client_ids)} clients do not fit in {slots} slots")
    header = torch.zeros(task_header_len(slots), dtype=torch.int64)
    header[:6] = torch.tensor([MAGIC_TASK, kind, round, len(client_ids), dim, slots])
    k = len(client_ids)
    if k:
        header[6 : 6 + k] = torch.tensor(client_ids)
        header[6 + slots : 6 + slots + k] = torch.tensor([int(c in poisoned) for c in client_ids])
    return header


def decode_task(header: Tensor, dim: int, slots: int) -> Task:
    """Parse a task header; ``ValueError`` if it is not one of this run's."""
    h = header.cpu().tolist()
    if len(h) != task_header_len(slots) or h[0] != MAGIC_TASK or h[4] != dim or h[5] != slots:
        raise ValueError(f"the server's task header {h[:6]} does not fit this rank's run "
                         f"(d={dim}, K={slots}): do all ranks run the same config?")
    kind, round, k = h[1], h[2], h[3]
    if kind not in (ROUND, STOP) or not 0 <= k <= slots:
        raise ValueError(f"bad task header: kind {kind}, {k} clients")
    ids = tuple(h[6 : 6 + k])
    poisoned = frozenset(c for c, p in zip(ids, h[6 + slots : 6 + slots + k]) if p)
    return Task(kind, round, ids, poisoned)


def encode_frame(
    out: Tensor, round: int, client_id: int, row: Tensor | None,
    num_samples: int = 0, loss: float = float("nan"),
) -> Tensor:
    """Write one client's answer into the frame buffer ``out`` (``uint8``, fixed size).

    ``row=None`` marks the client as failed on its worker. A row of any dtype and shape is
    described truthfully in the header; its bytes are copied only if they fit the capacity.
    """
    header = torch.zeros(HEADER_WORDS, dtype=torch.int64)
    header[0], header[1], header[2] = MAGIC_FRAME, round, client_id
    if row is None:
        header[3] = FAILED
    else:
        shape = list(row.shape)
        nbytes = row.numel() * row.element_size()
        header[4] = DTYPE_CODES.get(row.dtype, 0)
        header[5] = len(shape)
        dims = shape[:MAX_DIMS]
        header[6 : 6 + len(dims)] = torch.tensor(dims, dtype=torch.int64)
        header[10], header[11], header[12] = row.numel(), nbytes, num_samples
        header[13:14] = torch.tensor([loss], dtype=torch.float64).view(torch.int64)
        if 0 < nbytes <= out.numel() - HEADER_BYTES:
            payload = row.detach().reshape(-1).contiguous().view(torch.uint8)
            out[HEADER_BYTES : HEADER_BYTES + nbytes].copy_(payload)
    out[:HEADER_BYTES].copy_(header.view(torch.uint8))
    return out


def prepare_frame(buf: Tensor, dtype: torch.dtype) -> Tensor:
    """Reset a receive buffer: header zeroed (no magic), payload NaN."""
    buf[:HEADER_BYTES].zero_()
    buf[HEADER_BYTES:].view(dtype).fill_(float("nan"))
    return buf


@dataclass
class DecodedFrame:
    """A frame as the server judged it: ``row`` is ``None`` exactly when ``reason`` is set."""

    row: Tensor | None
    num_samples: int = 0
    loss: float = float("nan")
    reason: str | None = None


def decode_frame(
    frame: Tensor, *, round: int, client_id: int, dim: int, dtype: torch.dtype,
    max_norm: float, max_samples: int,
) -> DecodedFrame:
    """Judge one received frame (see module docstring); never raises on bad content."""
    frame = frame.cpu()
    capacity = frame.numel() - HEADER_BYTES
    h = frame[:HEADER_BYTES].view(torch.int64).tolist()

    def reject(reason: str) -> DecodedFrame:
        return DecodedFrame(None, reason=reason)

    if h[0] != MAGIC_FRAME:
        return reject("malformed frame (no valid header)")
    if h[1] != round or h[2] != client_id:
        return reject(f"frame of client {h[2]} round {h[1]}, expected client {client_id} "
                      f"round {round}")
    if h[3] != OK:
        return reject("the client's computation failed on its worker")
    row_dtype = _CODE_DTYPES.get(h[4])
    ndim, numel, nbytes = h[5], h[10], h[11]
    if row_dtype is None:
        return reject(f"unknown dtype code {h[4]}")
    if not 0 <= ndim <= MAX_DIMS or any(s < 0 for s in h[6 : 6 + ndim]):
        return reject(f"shape with {ndim} dimensions, expected ({dim},)")
    shape = h[6 : 6 + ndim]
    if math.prod(shape) != numel or nbytes != numel * _itemsize(row_dtype):
        return reject(f"inconsistent header: shape {tuple(shape)}, {numel} values, {nbytes} bytes")
    if nbytes > capacity:
        return reject(f"oversize payload: {nbytes} bytes declared ({row_dtype} "
                      f"{tuple(shape)}), at most {capacity} accepted (not read)")
    data = frame[HEADER_BYTES : HEADER_BYTES + nbytes].view(row_dtype).reshape(shape)
    row, reason = sanitize_row(data, dim, dtype, max_norm)
    if row is None:
        return reject(str(reason))
    num_samples, loss = h[12], float(frame[13 * 8 : 14 * 8].view(torch.float64))
    why = check_claims(num_samples, loss, max_samples)
    if why is not None:
        return reject(why)
    return DecodedFrame(row, num_samples, loss)
