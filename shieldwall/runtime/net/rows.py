"""Reading one uploaded row: every way it can be wrong becomes a reason, never an exception.

The header must name a supported dtype, a shape no larger than one row, ``nbytes`` equal to
that shape's size, and a ``num_samples``/``loss`` claim that
:func:`~shieldwall.runtime.claims.check_claims` accepts (a whole number of samples no larger
than the client's shard, which the server knows; a finite non-negative loss). Chunks are then
read until the declared size, never past it (so a peer cannot make the server buffer more than
one row); an empty chunk is refused (so a stream has at most one frame per byte), and a stream
that ends early is *truncated*. The assembled tensor goes through
:func:`~shieldwall.runtime.base.sanitize_row` (dtype, shape, NaN/Inf, norm bound).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from shieldwall.runtime.base import sanitize_row
from shieldwall.runtime.claims import check_claims
from shieldwall.runtime.net import wire
from shieldwall.runtime.net.wire import Kind, WireError

__all__ = ["Answer", "read_row"]


MAX_REASON = 200
"""The longest rejection reason kept (longer ones are cut: they quote client input)."""


@dataclass
class Answer:
    """A client's answer to a round: its row, or ``None`` and why it was rejected."""

    row: Tensor | None
    num_samples: float = 0.0
    loss: float = float("nan")
    reason: str | None = None

    def __post_init__(self) -> None:
        # reasons quote what the client sent (a 64 KiB header at most): logged and kept in
        # metrics.jsonl every round, so they are cut to a bounded length
        if self.reason is not None and len(self.reason) > MAX_REASON:
            self.reason = f"{self.reason[:MAX_REASON]}… ({len(self.reason)} characters)"


def read_row(
    head: dict[str, Any], frames: Iterator[bytes], dim: int, dtype: torch.dtype, max_norm: float,
    max_samples: int,
) -> Answer:
    """The row an ``UPLOAD`` header and its ``CHUNK`` frames carry (see module docstring);
    ``max_samples`` is the client's shard size."""
    dtype_text = head.get("dtype")
    if not isinstance(dtype_text, str) or dtype_text not in wire.DTYPES:
        return Answer(None, reason=f"unsupported dtype {dtype_text!r}")
    itemsize = torch.empty((), dtype=wire.DTYPES[dtype_text]).element_size()
    row_bytes = dim * torch.empty((), dtype=dtype).element_size()
    try:
        shape = wire.check_shape(head.get("shape"), row_bytes)
    except WireError as exc:
        return Answer(None, reason=str(exc))
    nbytes = math.prod(shape) * itemsize
    if head.get("nbytes") != nbytes:
        return Answer(None, reason=f"header nbytes {head.get('nbytes')!r} != {nbytes}")
    if nbytes > row_bytes:
        return Answer(None, reason=f"oversize upload: {nbytes} bytes, a row is {row_bytes}")
    samples, loss = head.get("num_samples"), head.get("loss")
    why = check_claims(samples, loss, max_samples)
    if why is not None:
        return Answer(None, reason=why)
    buf = bytearray()
    for raw in frames:
        try:
            payload = wire.decode(raw, Kind.CHUNK).payload
        except WireError as exc:
            return Answer(None, reason=f"bad chunk: {exc}")
        if not payload:  # frames that carry nothing would let a stream go on for ever
            return Answer(None, reason="empty chunk")
        if len(buf) + len(payload) > nbytes:
            return Answer(None, reason=f"oversize stream: over the {nbytes} declared bytes")
        buf += payload
    if len(buf) < nbytes:
        return Answer(None, reason=f"truncated upload: {len(buf)} of {nbytes} bytes")
    row, why = sanitize_row(wire.tensor_from_bytes(buf, dtype_text, shape), dim, dtype, max_norm)
    return Answer(row, float(samples), float(loss), why)
