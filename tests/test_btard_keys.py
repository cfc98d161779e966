"""Signing keys are remote input too: a malformed announced key silences its peer instead of
crashing the others, and HMAC (whose "public" key is the secret) stays inside one process."""

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


def test_the_swarm_refuses_hmac_before_starting_a_dht() -> None:
    pytest.importorskip("hivemind", reason="the swarm extra (hivemind) is not installed")
    from shieldwall.btard.swarm.node import SwarmError, SwarmNode, SwarmOptions

    with pytest.raises(SwarmError, match="hmac"):
        SwarmNode(make_cfg(attack=None, n=4, signature="hmac"), SwarmOptions())
