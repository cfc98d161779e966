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

The same key signs the protocol's messages (scheme ``rsa`` of :mod:`shieldwall.btard.crypto`),
and each peer's public key is read from its registration's subkey: a key is bound to its peer
id by the hash, so a Byzantine peer cannot hand different keys to different peers (which would
make its signed evidence verify at some peers and not at others, and so frame an honest
accuser).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

__all__ = ["IdentityError", "load_identity", "owner_peer_id", "owner_public", "peer_id_of",
           "signed_validator"]

_OWNER = re.compile(rb"\[owner:(ssh-rsa [A-Za-z0-9+/=]+)\]")


class IdentityError(ValueError):
    """An identity file that is not a libp2p RSA private key."""


def load_identity(path: str | Path) -> Any:
    """The RSA private key (a ``cryptography`` key) of a libp2p identity file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from hivemind.proto import crypto_pb2

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
    return raw


def signed_validator(private: Any) -> Any:
    """hivemind's signature validator signing with ``private`` (an identity's RSA key)."""
    from hivemind.dht.crypto import RSASignatureValidator
    from hivemind.utils.crypto import RSAPrivateKey

    key = RSAPrivateKey.__new__(RSAPrivateKey)  # hivemind's wrapper around the same key
    key._private_key = private
    return RSASignatureValidator(key)


def peer_id_of(public: bytes) -> str:
    """The base58 libp2p peer id of an RSA public key (DER SubjectPublicKeyInfo): the SHA-256
    multihash (code 0x12, length 32) of the protobuf-encoded key."""
    from hivemind.p2p import PeerID
    from hivemind.proto import crypto_pb2

    encoded = crypto_pb2.PublicKey(key_type=crypto_pb2.RSA, data=public).SerializeToString()
    return PeerID(b"\x12\x20" + hashlib.sha256(encoded).digest()).to_base58()


def owner_peer_id(subkey: Any) -> str | None:
    """The base58 libp2p peer id an ``[owner:<ssh-rsa key>]`` subkey names; ``None`` for any
    other subkey (a plain string, garbage, a key that is not RSA)."""
    public = owner_public(subkey)
    return None if public is None else peer_id_of(public)


def owner_public(subkey: Any) -> bytes | None:
    """The RSA public key (DER) of an ``[owner:<ssh-rsa key>]`` subkey; ``None`` otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

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
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
