"""The messages of one BTARD-SGD step, in the order they are sent.

Broadcast messages (common knowledge; every peer receives the same one from each sender):
:class:`Hello` (presence and MPRNG commitment), :class:`Commit` (hashes of the gradient parts),
:class:`ResultCommit` (hash of an aggregated part), :class:`Reveal` (MPRNG secret),
:class:`Check` (CenteredClip checksums), :class:`Accuse` (accusations with evidence and claims of
missing messages).

Point-to-point messages, wrapped in :class:`Signed` so that a receiver can show them to everyone
as evidence: :class:`Part` (sender → aggregator), :class:`Result` (aggregator → every peer),
:class:`Opening` (validated peer → its validator: the whole gradient it committed to).

An :class:`Accusation` names its kind, accuser, accused and carries signed messages as evidence;
:mod:`shieldwall.btard.judge` decides from the evidence alone whether it is proven.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from shieldwall.btard.crypto import KeyPair, digest, verify_signature

__all__ = [
    "Hello",
    "Commit",
    "Part",
    "ResultCommit",
    "Result",
    "Reveal",
    "Check",
    "Opening",
    "Accusation",
    "Accuse",
    "Signed",
    "sign",
    "signed_ok",
    "well_formed",
    "ACCUSATION_KINDS",
]

#: Accusation kinds and what their evidence shows.
ACCUSATION_KINDS: dict[str, str] = {
    "bad_part": "a signed part whose hash differs from the sender's commitment, or that is "
    "malformed (length, dtype, non-finite values)",
    "bad_result": "a signed aggregated part whose hash or norm differs from the aggregator's "
    "commitment, or that is malformed",
    "bad_opening": "a signed opening whose parts differ from the peer's commitments, or that is "
    "malformed",
    "bad_gradient": "a signed opening that differs from the gradient recomputed from the public "
    "seed",
    "bad_checksum": "a published CenteredClip checksum that differs from the one recomputed from "
    "the peer's signed part",
}


@dataclass(frozen=True, eq=False)
class Hello:
    round: int
    mprng_commitment: bytes


@dataclass(frozen=True, eq=False)
class Commit:
    """Hashes and norms of the sender's gradient parts (the norms bound the rounding allowance
    of the CenteredClip check, so that an aggregator cannot widen it)."""

    round: int
    part_hashes: tuple[bytes, ...]
    loss: float
    part_norms: tuple[float, ...] = ()


@dataclass(frozen=True, eq=False)
class Part:
    round: int
    index: int
    tensor: Tensor


@dataclass(frozen=True, eq=False)
class ResultCommit:
    """An aggregator's commitment: hash and norm of its result, who it included, who it did not
    receive a part from (``missing``), and solver statistics."""

    round: int
    result_hash: bytes
    result_norm: float
    included: tuple[int, ...]
    missing: tuple[int, ...] = ()
    iterations: int = 0
    num_clipped: int = 0


@dataclass(frozen=True, eq=False)
class Result:
    round: int
    index: int
    tensor: Tensor


@dataclass(frozen=True, eq=False)
class Reveal:
    round: int
    secret: bytes


@dataclass(frozen=True, eq=False)
class Check:
    """:math:`s_k^j` for every part ``j`` (``None`` where the aggregator did not include k)."""

    round: int
    checksums: tuple[float | None, ...]


@dataclass(frozen=True, eq=False)
class Opening:
    round: int
    tensor: Tensor


@dataclass(frozen=True, eq=False)
class Signed:
    """``body`` as sent by ``sender``, with ``sender``'s signature over its digest."""

    sender: int
    body: Any
    signature: bytes

    def verify(self, scheme: str, keyring: dict[int, bytes]) -> bool:
        public = keyring.get(self.sender)
        if public is None:
            return False
        return verify_signature(scheme, public, digest(self.sender, self.body), self.signature)


def signed_ok(
    msg: Any, sender: int, body_type: type, r: int, scheme: str, keyring: dict[int, bytes],
    index: int | None = None,
) -> bool:
    """``msg`` is a :class:`Signed` ``body_type`` of step ``r`` (and part ``index``) that
    ``sender`` signed. Field types are checked first: messages come from possibly Byzantine
    peers and must not be able to raise inside the protocol."""
    return (
        isinstance(msg, Signed)
        and type(msg.sender) is int
        and msg.sender == sender
        and isinstance(msg.body, body_type)
        and type(msg.body.round) is int
        and msg.body.round == r
        and isinstance(msg.body.tensor, Tensor)
        and (index is None or (type(msg.body.index) is int and msg.body.index == index))
        and msg.verify(scheme, keyring)
    )


def well_formed(t: Tensor, size: int, dtype: Any) -> bool:
    """A part or gradient of the expected length and dtype, with finite values only."""
    return t.dim() == 1 and t.numel() == size and t.dtype == dtype and bool(t.isfinite().all())


def sign(key: KeyPair, sender: int, body: Any) -> Signed:
    """``body`` signed by ``sender``'s ``key``."""
    return Signed(sender, body, key.sign(digest(sender, body)))


@dataclass(frozen=True, eq=False)
class Accusation:
    """``accuser`` claims ``accused`` misbehaved (``kind`` in :data:`ACCUSATION_KINDS`).

    Attributes:
        part: the part concerned (aggregations and checksums), else ``None``.
        evidence: signed messages of the accused (and, for checksums, the aggregator's result).
    """

    kind: str
    accuser: int
    accused: int
    part: int | None = None
    evidence: tuple[Signed, ...] = ()


@dataclass(frozen=True, eq=False)
class Accuse:
    """A peer's accusations of the round and the p2p messages it did not receive
    (``missing``: ``(what, peer)`` pairs)."""

    round: int
    accusations: tuple[Accusation, ...] = ()
    missing: tuple[tuple[str, int], ...] = field(default_factory=tuple)
