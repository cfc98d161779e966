"""Signed swarm records: only a peer itself can register its libp2p identity in the DHT.

A peer's libp2p identity is an RSA key pair (hivemind's identity file: a protobuf
``PrivateKey`` holding a DER key); its peer id is the SHA-256 multihash of the protobuf-encoded
public key, so the public key names exactly one peer id.

The swarm stores its membership records (``<prefix>.step.<t>``, ``<prefix>.live``) under the
subkey ``[owner:<ssh-rsa public key>]`` of the registering peer, and every peer's DHT runs
hivemind's :class:`~hivemind.dht.crypto.RSASignatureValidator` with that same identity key. The
validator signs such a record on store and every DHT node checks the signature when it stores
or reads one (an unsigned or wrongly signed record is dropped), so a Byzantine peer cannot
register another identity — an absent peer, which the group would then count silent and ban, or
a made-up one, which would cost every step a phase timeout. A reader turns the subkey back into
the peer id with :func:`owner_peer_id` and ignores any other subkey.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

__all__ = ["IdentityError", "load_identity", "owner_peer_id", "signed_validator"]

_OWNER = re.compile(rb"\[owner:(ssh-rsa [A-Za-z0-9+/=]+)\]")


class IdentityError(ValueError):
    """An identity file that is not a libp2p RSA private key."""


def load_identity(path: str | Path) -> Any:
    """The RSA private key (hivemind's ``RSAPrivateKey``) of a libp2p identity file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from hivemind.proto import crypto_pb2
    from hivemind.utils.crypto import RSAPrivateKey

    try:
        proto = crypto_pb2.PrivateKey.FromString(Path(path).read_bytes())
        if proto.key_type != crypto_pb2.KeyType.RSA:
            raise IdentityError(f"it holds a {crypto_pb2.KeyType.Name(proto.key_type)} key")
        raw = serialization.load_der_private_key(proto.data, password=None)
        if not isinstance(raw, rsa.RSAPrivateKey):
            raise IdentityError("its key is not RSA")
    except IdentityError as e:
        raise IdentityError(f"identity file {path}: {e}; the swarm signs its DHT records with "
                            f"an RSA libp2p identity (remove the file to create one)") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one line
        raise IdentityError(f"identity file {path} is not a libp2p private key "
                            f"({type(e).__name__}); remove it to create one") from None
    key = RSAPrivateKey.__new__(RSAPrivateKey)
    key._private_key = raw
    return key


def signed_validator(path: str | Path) -> Any:
    """hivemind's signature validator holding the identity key of ``path``."""
    from hivemind.dht.crypto import RSASignatureValidator

    return RSASignatureValidator(load_identity(path))


def owner_peer_id(subkey: Any) -> str | None:
    """The base58 libp2p peer id an ``[owner:<ssh-rsa key>]`` subkey names; ``None`` for any
    other subkey (a plain string, garbage, a key that is not RSA)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from hivemind.p2p import PeerID
    from hivemind.proto import crypto_pb2

    if not isinstance(subkey, bytes) or len(subkey) > 4096:
        return None
    match = _OWNER.fullmatch(subkey)
    if match is None:
        return None
    try:
        public = serialization.load_ssh_public_key(match.group(1))
    except Exception:  # noqa: BLE001 - garbage is no identity
        return None
    if not isinstance(public, rsa.RSAPublicKey):
        return None
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = crypto_pb2.PublicKey(key_type=crypto_pb2.RSA, data=der).SerializeToString()
    # the multihash of a SHA-256 digest: code 0x12, length 32, digest
    return PeerID(b"\x12\x20" + hashlib.sha256(encoded).digest()).to_base58()
