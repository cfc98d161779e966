"""How a joining swarm peer agrees on the state to start from (pure functions; the node asks).

Every live peer serves ``(step, hash, group, banned)`` of the state it starts its current step
from (:func:`state_hash` of parameters, optimizer state, step, ledger and group). A joiner takes
the answer given by a strict majority of the answering identities that this very answer does
not list as banned (:func:`majority_answer`), downloads the state from one of its voters and
keeps it only if it matches that answer in every field (:func:`matching_state`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from shieldwall.btard.crypto import tensor_digest
from shieldwall.btard.wire import from_bytes
from shieldwall.checkpoint import load_tensors

__all__ = ["state_hash", "majority_answer", "matching_state", "Answer"]

Answer = tuple[int, bytes, tuple[int, ...], tuple[int, ...]]
"""``(step, state hash, group, banned)`` as a peer serves it."""


def state_hash(state: dict[str, Any]) -> bytes:
    """A digest of a served state (tensors by content, the rest by canonical JSON)."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            h.update(tensor_digest(x.detach().cpu().contiguous()))
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"[%d" % len(x))
            for v in x:
                feed(v)
        else:
            h.update(json.dumps(x, sort_keys=True, default=str).encode())

    feed(state)
    return h.digest()


def _answer(raw: bytes | None) -> Answer | None:
    """A served ``(step, hash, group, banned)``, or ``None`` for anything else."""
    reply = from_bytes(raw or b"")
    if (isinstance(reply, tuple) and len(reply) == 4 and type(reply[0]) is int
            and isinstance(reply[1], bytes) and all(
                isinstance(x, tuple) and all(type(p) is int for p in x) for x in reply[2:])):
        return reply
    return None


def majority_answer(answers: dict[int, bytes | None]) -> tuple[Answer, list[int]] | None:
    """The answer (and its voters) of a strict majority of the peers that answered well-formed,
    not counting those the answer itself lists as banned; answers with more voters, then of a
    later step, are tried first. ``answers``: peer id → raw answer (``None``: no answer)."""
    votes: dict[Answer, list[int]] = {}
    for pid, raw in answers.items():
        reply = _answer(raw)
        if reply is not None:
            votes.setdefault(reply, []).append(pid)
    answered = {p for v in votes.values() for p in v}
    for reply, voters in sorted(votes.items(), key=lambda kv: (-len(kv[1]), -kv[0][0])):
        eligible = answered - set(reply[3])
        if set(voters) <= eligible and 2 * len(voters) > len(eligible):
            return reply, voters
    return None


def matching_state(raw: bytes | None, answer: Answer,
                   shape: torch.Size) -> dict[str, Any] | None:
    """The downloaded state if it is exactly the agreed one (hash, step, group, bans, and
    parameters of this model's ``shape``), else ``None``: a state that hashes right but does not
    fit is as wrong as garbage."""
    step, digest, group, banned = answer
    try:
        state = load_tensors(raw or b"")
        ok = (isinstance(state, dict) and state_hash(state) == digest
              and state["step"] == step and tuple(state["group"]) == tuple(group)
              and tuple(sorted(state["ledger"]["banned"])) == tuple(banned)
              and state["params"].shape == shape)
    except Exception:  # noqa: BLE001 - garbage is a wrong state
        return None
    return state if ok else None
