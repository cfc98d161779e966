r"""Commitments, signatures and the multi-party random number generator (MPRNG).

* **Hash commitments** (BTARD, Sec. 3): before sending anything a peer broadcasts
  :math:`\mathrm{sha256}` of each of its gradient parts; every part received later is checked
  against it. :func:`tensor_digest` hashes dtype, shape and the raw bytes, so two tensors have the
  same digest only if they are bit-identical.
* **Signatures** turn what a peer sent into evidence a third party can check (the paper assumes
  every message is signed; Sec. 3, the Accuse procedure). Only point-to-point messages need
  them here: broadcast messages are common knowledge already. Schemes: ``ed25519`` (the
  ``cryptography`` package; real public-key signatures) and ``hmac`` (HMAC-SHA256 whose
  verification key is the signing key: the same protocol behaviour at a fraction of the cost,
  for simulations only, since anyone holding the key ring could forge). ``auto`` picks
  ``ed25519`` when it is installed. ``rsa`` (PKCS#1 v1.5, SHA-256; the public key is DER
  SubjectPublicKeyInfo) is what the hivemind swarm uses: there the signing key is the peer's
  libp2p identity key, whose hash *is* its peer id, so a peer cannot show different keys to
  different peers (:func:`rsa_keypair`).
* **MPRNG** (Sec. 3, the multi-party random number generator): commit–reveal.
  Each peer draws a secret :math:`r_i`, broadcasts :math:`c_i = \mathrm{sha256}(r_i)` at the start
  of the round and reveals :math:`r_i` only after every aggregator has committed to its result;
  the round's shared seed is :math:`\mathrm{sha256}(t, (i, r_i)_{i})`. No peer knows it before
  the others have committed, so no single peer controls the validators or the check directions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import struct
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "tensor_digest",
    "fields_of",
    "digest",
    "KeyPair",
    "make_keypair",
    "rsa_keypair",
    "public_key_ok",
    "verify_signature",
    "resolve_scheme",
    "mprng_secret",
    "mprng_commitment",
    "mprng_seed",
]


_DIGESTS: dict[int, tuple[weakref.ref, int, bytes]] = {}


def _forget(key: int, ref: weakref.ref) -> None:
    entry = _DIGESTS.get(key)
    if entry is not None and entry[0] is ref:
        del _DIGESTS[key]


def tensor_digest(t: Tensor) -> bytes:
    """sha256 of ``t``'s dtype, shape and bytes (CPU, contiguous).

    Memoised per live tensor object and its version counter (bumped by every in-place change),
    so hashing a message's tensor for the commitment and for the signature costs one pass.
    """
    memo = _DIGESTS.get(id(t))
    if memo is not None and memo[0]() is t and memo[1] == t._version:
        return memo[2]
    flat = t.detach().cpu().contiguous()
    h = hashlib.sha256()
    h.update(str(flat.dtype).encode())
    h.update(struct.pack(f"<{flat.dim()}q", *flat.shape))
    if flat.numel():
        h.update(flat.reshape(-1).view(torch.uint8).numpy())
    out = h.digest()
    key = id(t)
    _DIGESTS[key] = (weakref.ref(t, lambda ref, key=key: _forget(key, ref)), t._version, out)
    return out


def fields_of(cls: type) -> tuple[str, ...]:
    """Field names of a dataclass type (cached)."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


_FIELDS: dict[type, tuple[str, ...]] = {}


def _feed(h: Any, item: Any) -> None:
    if isinstance(item, Tensor):
        h.update(b"T" + tensor_digest(item))
    elif isinstance(item, bytes):
        h.update(b"B" + struct.pack("<q", len(item)) + item)
    elif isinstance(item, str):
        data = item.encode()
        h.update(b"S" + struct.pack("<q", len(data)) + data)
    elif isinstance(item, bool) or item is None:
        h.update(b"N" if item is None else (b"1" if item else b"0"))
    elif isinstance(item, int):
        h.update(b"I" + str(item).encode() + b";")
    elif isinstance(item, float):
        h.update(b"F" + struct.pack("<d", item))
    elif isinstance(item, (list, tuple)):
        h.update(b"L" + struct.pack("<q", len(item)))
        for x in item:
            _feed(h, x)
    elif isinstance(item, Mapping):
        h.update(b"M" + struct.pack("<q", len(item)))
        for k in sorted(item, key=repr):
            _feed(h, k)
            _feed(h, item[k])
    elif dataclasses.is_dataclass(item):
        h.update(b"D" + type(item).__name__.encode())
        for name in fields_of(type(item)):
            _feed(h, getattr(item, name))
    else:
        raise TypeError(f"cannot digest a {type(item).__name__}")


def digest(*items: Any) -> bytes:
    """Canonical sha256 of nested tensors, bytes, numbers, strings, sequences and dataclasses."""
    h = hashlib.sha256()
    for item in items:
        _feed(h, item)
    return h.digest()


def resolve_scheme(scheme: str) -> str:
    """``auto`` → ``ed25519`` if the ``cryptography`` package imports, else ``hmac``."""
    scheme = scheme.lower()
    if scheme == "auto":
        try:
            import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
        except ImportError:
            return "hmac"
        return "ed25519"
    if scheme not in ("ed25519", "hmac"):
        raise ValueError(f"unknown signature scheme {scheme!r}; use auto, ed25519 or hmac")
    return scheme


@dataclasses.dataclass
class KeyPair:
    """A peer's signing key and the public key it announces.

    Attributes:
        scheme: ``ed25519``, ``hmac`` or ``rsa``.
        public: bytes every peer uses to verify this peer's signatures.
    """

    scheme: str
    public: bytes
    _private: Any = dataclasses.field(repr=False, default=None)

    def sign(self, message: bytes) -> bytes:
        if self.scheme == "ed25519":
            return self._private.sign(message)
        if self.scheme == "rsa":
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding

            return self._private.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return hmac.new(self._private, message, hashlib.sha256).digest()


def rsa_keypair(private: Any) -> KeyPair:
    """The ``rsa`` key pair of a ``cryptography`` RSA private key (a libp2p identity's)."""
    from cryptography.hazmat.primitives import serialization

    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return KeyPair("rsa", public, private)


def make_keypair(scheme: str, seed: bytes | None = None) -> KeyPair:
    """A key pair; ``seed`` (32 bytes) makes it reproducible (simulations), else it is random."""
    scheme = resolve_scheme(scheme)
    secret = seed if seed is not None else os.urandom(32)
    if len(secret) != 32:
        secret = hashlib.sha256(secret).digest()
    if scheme == "ed25519":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        private = Ed25519PrivateKey.from_private_bytes(secret)
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return KeyPair(scheme, public, private)
    return KeyPair(scheme, secret, secret)


_KEYS: dict[tuple[str, bytes], Any] = {}  # (scheme, public bytes) -> parsed public key


def _parse_public(scheme: str, public: Any) -> Any:
    """The ``cryptography`` public key of ``public`` for ``ed25519`` (32 bytes on the curve) or
    ``rsa`` (DER, 2048–8192 bits); ``None`` for anything else."""
    if type(public) is not bytes:
        return None
    try:
        if scheme == "ed25519" and len(public) == 32:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            return Ed25519PublicKey.from_public_bytes(public)
        if scheme == "rsa" and len(public) <= 2048:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = serialization.load_der_public_key(public)
            if isinstance(key, rsa.RSAPublicKey) and 2048 <= key.key_size <= 8192:
                return key
    except Exception:  # noqa: BLE001 - garbage is no key
        return None
    return None


def _public_key(scheme: str, public: Any) -> Any:
    """:func:`_parse_public`, cached (at most 65,536 keys: identities are cheap in a swarm)."""
    if type(public) is not bytes:
        return None
    key = _KEYS.get((scheme, public))
    if key is None:
        key = _parse_public(scheme, public)
        if key is not None:
            if len(_KEYS) >= 65536:
                _KEYS.clear()
            _KEYS[(scheme, public)] = key
    return key


def public_key_ok(scheme: str, public: Any) -> bool:
    """Whether ``public`` can be a key of ``scheme`` (32 bytes for ``ed25519`` and ``hmac``, and
    an Ed25519 key must decode; a DER RSA key of 2048–8192 bits for ``rsa``). A peer announcing
    anything else is treated as having announced no key."""
    if scheme == "hmac":
        return type(public) is bytes and len(public) == 32
    return _public_key(scheme, public) is not None


def verify_signature(scheme: str, public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s signature of ``message`` (``False``, never an
    exception, for a malformed key or signature)."""
    if not isinstance(signature, bytes) or type(public) is not bytes:
        return False
    if scheme in ("ed25519", "rsa"):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        key = _public_key(scheme, public)
        if key is None:
            return False
        try:
            if scheme == "rsa":
                key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            else:
                key.verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True
    expected = hmac.new(public, message, hashlib.sha256).digest()
    return hmac.compare_digest(expected, signature)


def mprng_secret(entropy: bytes, round: int, peer: int) -> bytes:
    """A peer's 32-byte MPRNG secret for ``round`` from its private ``entropy``."""
    return hashlib.sha256(b"mprng" + entropy + struct.pack("<qq", round, peer)).digest()


def mprng_commitment(secret: bytes) -> bytes:
    """:math:`c_i = \\mathrm{sha256}(r_i)`."""
    return hashlib.sha256(b"commit" + secret).digest()


def mprng_seed(round: int, reveals: Mapping[int, bytes]) -> int:
    """The round's shared 63-bit seed from every valid reveal (order-independent)."""
    h = hashlib.sha256(struct.pack("<q", round))
    for peer in sorted(reveals):
        h.update(struct.pack("<q", peer) + reveals[peer])
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)
