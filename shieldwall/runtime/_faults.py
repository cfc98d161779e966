"""Test-only fault injection for the torch.distributed runtime's worker ranks.

Never set in real runs. ``SHIELDWALL_TEST_FAULTS`` holds ``;``-separated ``RANK:ACTION[@ROUND]``:

* ``die@K``: the rank exits (``os._exit(17)``, no clean-up) on receiving round ``K``;
* ``stall@K``: the rank sleeps ``SHIELDWALL_TEST_STALL_S`` seconds (default 600) in round ``K``;
* ``rogue``: the rank's frames are Byzantine at the wire, cycling through :data:`ROGUE_KINDS`
  over ``(round, slot)``: NaN, wrong shape, oversize, wrong dtype, huge norm, a short frame, a
  garbage header, another client's id, an inflated sample count, a failed client.

The runtime reads the variable once at start-up (:func:`worker_fault`); with no fault for the
rank it gets ``None`` and never calls into this module again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from shieldwall.runtime.wire import HEADER_BYTES, encode_frame

__all__ = ["FAULTS_ENV", "ROGUE_KINDS", "WorkerFault", "worker_fault"]

log = logging.getLogger(__name__)

FAULTS_ENV = "SHIELDWALL_TEST_FAULTS"
ROGUE_KINDS = (
    "nan", "wrong_shape", "oversize", "wrong_dtype", "huge_norm", "short_frame", "bad_header",
    "wrong_client", "inflated_samples", "failed",
)


@dataclass(frozen=True)
class WorkerFault:
    """One rank's injected fault (see module docstring)."""

    action: str
    round: int = 0

    def at_round(self, round: int) -> None:
        """``die``/``stall`` when ``round`` is the configured one."""
        if round != self.round:
            return
        if self.action == "die":
            log.warning("test fault: this rank dies in round %d", round)
            os._exit(17)
        if self.action == "stall":
            log.warning("test fault: this rank stalls in round %d", round)
            time.sleep(float(os.environ.get("SHIELDWALL_TEST_STALL_S", "600")))

    def frame(
        self, buf: Tensor, round: int, client_id: int, slot: int, slots: int,
        update: Tensor, num_samples: int, loss: float,
    ) -> Tensor:
        """The frame to send: honest unless the rank is ``rogue``."""
        if self.action != "rogue":
            return encode_frame(buf, round, client_id, update, num_samples, loss)
        kind = ROGUE_KINDS[(round * slots + slot) % len(ROGUE_KINDS)]
        log.warning("test fault: client %d sends a %s frame in round %d", client_id, kind, round)
        row, c, n = update, client_id, num_samples
        if kind == "nan":
            row = torch.full_like(update, float("nan"))
        elif kind == "wrong_shape":
            row = update[:-1]
        elif kind == "oversize":
            row = torch.ones(10 * update.numel(), dtype=update.dtype)
        elif kind == "wrong_dtype":
            row = update.to(torch.float16)
        elif kind == "huge_norm":
            row = torch.full_like(update, 1e10)
        elif kind == "wrong_client":
            c = client_id + 1000
        elif kind == "inflated_samples":
            n = 10**12
        elif kind == "failed":
            row = None
        out = encode_frame(buf, round, c, row, n, loss)
        if kind == "short_frame":  # header promises the full row; half of it is sent
            return out[: HEADER_BYTES + (out.numel() - HEADER_BYTES) // 2]
        if kind == "bad_header":
            out[:HEADER_BYTES] = 0xAB
        return out


def worker_fault(rank: int) -> WorkerFault | None:
    """This rank's fault from :data:`FAULTS_ENV`, or ``None``."""
    spec = os.environ.get(FAULTS_ENV, "").strip()
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        who, _, what = item.partition(":")
        action, _, at = what.partition("@")
        if int(who) == rank:
            if action not in ("die", "stall", "rogue"):
                raise ValueError(f"{FAULTS_ENV}: unknown action {action!r} in {item!r}")
            return WorkerFault(action, int(at or 0))
    return None
