"""Signing keys are remote input too: a malformed announced key bans its peer instead of
crashing the others, HMAC (whose "public" key is the secret) stays inside one process, and the
swarm's RSA identity signatures verify only with the signer's own key."""

from __future__ import annotations

import pytest
import torch

from shieldwall.btard import run as btard_run
from shieldwall.btard.crypto import make_keypair, public_key_ok, verify_signature
from shieldwall.config import ConfigError
from tests.test_btard_protocol import make_cfg

pytest.importorskip("cryptography", reason="ed25519 needs the cryptography package")
torch.set_num_threads(1)


def test_keys_of_the_wrong_shape_are_refused_and_verify_never_raises() -> None:
    good = make_keypair("ed25519", b"s" * 32)
    sig = good.sign(b"m")
    assert public_key_ok("ed25519", good.public) and verify_signature("ed25519", good.public,
                                                                       b"m", sig)
    for bad in (b"", b"short", good.public + b"x", "a" * 32, None, 7, bytearray(good.public)):
        assert not public_key_ok("ed25519", bad)
        assert verify_signature("ed25519", bad, b"m", sig) is False  # raised ValueError before
    assert public_key_ok("hmac", b"k" * 32) and not public_key_ok("hmac", b"k" * 31)
    assert not verify_signature("ed25519", good.public, b"m", "not bytes")


def test_a_peer_announcing_a_bad_key_is_banned_before_the_first_step(monkeypatch) -> None:
    original = btard_run.InMemoryTransport.broadcast

    def broadcast(self, phase, messages):
        out = original(self, phase, messages)
        if phase == "keys":
            out[2] = b"\x01" * 5  # peer 2 announces a key nobody can verify with
        return out

    monkeypatch.setattr(btard_run.InMemoryTransport, "broadcast", broadcast)
    run = btard_run.build(make_cfg(attack=None, n=5, rounds=6, signature="ed25519"))
    assert 2 not in run.peers[0].keyring  # every peer saw the same broadcast: banned up front
    assert run.ledger.banned[2].reason == "announced no valid signing key"
    run.transport.set_members(run.ledger.active)
    verdicts = [run.step(r)[0] for r in range(3)]
    assert all(v.step and not v.banned for v in verdicts)  # the others train on, nobody else out
    active = [run.peers[i].params for i in run.ledger.active]
    assert all(torch.equal(active[0], p) for p in active[1:])
    assert not torch.equal(active[0], run.peers[2].params)  # it sat every step out


def test_hmac_is_refused_when_peers_are_separate_processes() -> None:
    cfg = make_cfg(attack=None, n=4, signature="hmac")
    cfg.comm_args.runtime = "torch_distributed"
    with pytest.raises(ConfigError, match="btard_args.signature: hmac .* ed25519"):
        btard_run._build_transport(cfg, 4)


def test_rsa_signatures_of_an_identity_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from shieldwall.btard.crypto import rsa_keypair

    key = rsa_keypair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    other = rsa_keypair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    sig = key.sign(b"m")
    assert public_key_ok("rsa", key.public) and verify_signature("rsa", key.public, b"m", sig)
    assert not verify_signature("rsa", key.public, b"n", sig)
    assert not verify_signature("rsa", other.public, b"m", sig)
    assert not verify_signature("rsa", key.public, b"m", sig[:-1] + b"\x00")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ed = make_keypair("ed25519", b"s" * 32)
    for bad in (rsa_keypair(small).public, ed.public, b"\x30" * 300, b"", None):
        assert not public_key_ok("rsa", bad)
        assert verify_signature("rsa", bad, b"m", sig) is False
