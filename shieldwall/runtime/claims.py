r"""What a remote client may claim besides its row: one check shared by every runtime's decoder.

A multi-process runtime receives, with each row, two numbers the server cannot recompute: the
*sample count* (FedAvg: the local data size; PS-SGD: the batch size) and the mean local *loss*.
The sample count weights the plain mean and every weighted rule (FedML's ``rfa``, the weighted
geometric median, …), so an unchecked claim lets one client capture the model: a client of four
claiming :math:`10^{15}` samples holds a weight of :math:`1 - 10^{-12}`. The rules:

* ``num_samples`` must be a whole number in ``[min(1, cap), cap]``, where ``cap`` is the most
  that client can honestly claim: the size of its shard, which the server knows because every
  process partitions the data identically from the config (:func:`shard_caps`). No algorithm
  reports more than its shard (FedAvg reports ``len(shard)``, PS-SGD ``min(batch, len(shard))``),
  so an honest claim is never refused, and a liar's weight is at most that of an honest client
  with the same shard. At least 1 (unless the shard is empty), so that a lone row never carries
  weight 0 into a weighted mean (0/0).
* ``loss`` must be a non-negative number no larger than :data:`MAX_LOSS` (every loss shieldwall
  computes is a cross-entropy; an honest one above :math:`10^6` means logits apart by as much,
  a run that has diverged anyway). It never reaches the model, but it does reach the
  ``train_loss`` metric and, in the redundancy driver, the divergence check: one client
  claiming :math:`1.7 \cdot 10^{308}` made their means overflow to ``inf`` and the run read as
  diverged.

A claim outside these bounds is a rejected row (Byzantine input, one unit of ``f``), with the
reason, exactly like a NaN row: it is never clamped silently. Used by the two runtimes whose
clients are other processes: the gRPC runtime (:mod:`shieldwall.runtime.net.rows`) and the
torch.distributed one (:mod:`shieldwall.runtime.wire`). The in-process runtimes (simulator,
batched) compute the counts themselves; BTARD, DETOX/ByzShield and fault-tolerant DDP do not
weight by sample counts (their batches are drawn by the protocol, not claimed by a peer).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_LOSS", "check_claims"]

MAX_LOSS = 1e6
"""The largest loss a client may claim (see the module docstring)."""


def check_claims(num_samples: Any, loss: Any, cap: int) -> str | None:
    """Why a client's ``(num_samples, loss)`` claim is refused, or ``None`` if it may stand.

    ``cap`` is the client's shard size (see module docstring). Accepts ints and integral
    floats (JSON has one number type); refuses booleans, strings, NaN, infinities.

    >>> check_claims(60, 0.3, 60) is None
    True
    >>> check_claims(1e15, 0.3, 60)
    'num_samples 1e+15 outside [1, 60] (the shard of this client holds 60)'
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | float):
        return f"num_samples {num_samples!r} is not a number"
    if isinstance(num_samples, float) and (
        not math.isfinite(num_samples) or num_samples != int(num_samples)
    ):
        return f"num_samples {num_samples!r} is not a whole number"
    low = min(1, cap)
    if not low <= num_samples <= cap:
        return (f"num_samples {_show(num_samples)} outside [{low}, {cap}] "
                f"(the shard of this client holds {cap})")
    if isinstance(loss, bool) or not isinstance(loss, int | float):
        return f"loss {loss!r} is not a number"
    if isinstance(loss, float) and not math.isfinite(loss):
        return f"loss {loss!r} is not a finite non-negative number"
    if not 0 <= loss <= MAX_LOSS:  # an int of any size compares without overflow
        return f"loss {_show(loss)} outside [0, {MAX_LOSS:g}]"
    return None


def _show(x: int | float) -> str:
    """A claimed number for a reason line (an int of thousands of digits is not printed)."""
    if isinstance(x, float):
        return f"{x:g}"
    return str(x) if abs(x) < 10**18 else f"an integer of {x.bit_length()} bits"
