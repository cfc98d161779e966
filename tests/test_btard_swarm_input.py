"""Hostile input to the swarm: garbage, oversize, replayed, wrong-step messages and a peer serving
a wrong state are dropped or caught (two real hivemind peers in this process)."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

import pytest
import torch

hivemind = pytest.importorskip("hivemind", reason="the swarm extra (hivemind) is not installed")

from shieldwall.btard.messages import Hello  # noqa: E402
from shieldwall.btard.protocol import Ledger  # noqa: E402
from shieldwall.btard.swarm.node import SwarmNode, state_hash  # noqa: E402
from shieldwall.btard.swarm.transport import HivemindTransport, pid_of  # noqa: E402
from shieldwall.btard.wire import to_bytes  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    a = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    b = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"],
                     initial_peers=[str(m) for m in a.get_visible_maddrs()])
    ta = HivemindTransport(a, "t", phase_timeout=5.0, max_bytes=4096)
    tb = HivemindTransport(b, "t", phase_timeout=5.0, max_bytes=4096)
    ids = {ta.pid: ta.p2p.peer_id, tb.pid: tb.p2p.peer_id}
    yield ta, tb, ids
    for t, d in ((ta, a), (tb, b)):
        t.close()
        d.shutdown()


def _raw(src: HivemindTransport, dst: HivemindTransport, raw: bytes) -> None:
    req = src._pb.DownloadData(metadata=raw)
    src._run(src.p2p.call_protobuf_handler(dst.p2p.peer_id, "t.msg", req, src._pb.DownloadData),
             30)


def test_identity_is_the_libp2p_peer_id(pair) -> None:
    ta, tb, _ = pair
    assert ta.pid == pid_of(ta.p2p.peer_id.to_base58()) != tb.pid


def test_hostile_messages_are_dropped_and_the_phase_goes_on(pair) -> None:
    ta, tb, ids = pair
    group = sorted(ids)
    for t in (ta, tb):
        t.begin_step(3, group, ids)
    before = dict(tb.rejected)
    _raw(ta, tb, b"\x80\x04garbage")                          # not a wire message
    _raw(ta, tb, to_bytes((3, "hello", b"x" * 8192)))          # oversize
    _raw(ta, tb, to_bytes((9, "hello", Hello(9, b"c"))))       # wrong step
    _raw(ta, tb, to_bytes((3, "no-such-phase", 1)))            # unknown phase
    _raw(ta, tb, to_bytes((3, "hello", Hello(3, b"first"))))   # accepted
    _raw(ta, tb, to_bytes((3, "hello", Hello(3, b"second"))))  # replay of the slot
    got = tb.broadcast("hello", {tb.pid: Hello(3, b"mine")})
    assert (got[ta.pid].round, got[ta.pid].mprng_commitment) == (3, b"first")
    assert got[tb.pid].mprng_commitment == b"mine"
    new = {k: v - before.get(k, 0) for k, v in tb.rejected.items() if v != before.get(k, 0)}
    assert new == {"garbage": 1, "oversize": 1, "wrong step 9 (now 3)": 1, "unknown phase": 1,
                   "replayed": 1}


def test_a_silent_member_costs_one_timeout_then_is_not_awaited(pair) -> None:
    ta, tb, ids = pair
    for t in (ta, tb):
        t.begin_step(4, sorted(ids), ids)
    tic = time.monotonic()
    got = tb.broadcast("hello", {tb.pid: Hello(4, b"m")})  # ta says nothing
    assert got[ta.pid] is None and time.monotonic() - tic >= 4.5
    tic = time.monotonic()
    got = tb.exchange("scatter", {tb.pid: {}})
    assert got == {tb.pid: {}} and time.monotonic() - tic < 4.0


def test_exchange_delivers_point_to_point(pair) -> None:
    ta, tb, ids = pair
    for t in (ta, tb):
        t.begin_step(5, sorted(ids), ids)
    ta.exchange("scatter", {ta.pid: {tb.pid: Hello(5, b"to-b")}})
    got = tb.exchange("scatter", {tb.pid: {ta.pid: Hello(5, b"to-a")}})
    assert list(got) == [tb.pid] and list(got[tb.pid]) == [ta.pid]
    assert got[tb.pid][ta.pid].mprng_commitment == b"to-b"


def test_a_peer_serving_a_wrong_state_is_caught() -> None:
    good = {"step": 7, "params": torch.arange(4.0), "optimizer": {}, "group": [1, 2],
            "ledger": {"banned": {3: (0, "bad_gradient")}, "silences": {}}}
    bad = dict(good, params=torch.zeros(4))
    served = {}
    for pid, state in ((11, bad), (12, good)):
        buf = io.BytesIO()
        torch.save(state, buf)
        served[pid] = buf.getvalue()
    served[13] = b"not a state"
    stepper = SimpleNamespace(load_state_dict=lambda s: None)
    fake = SimpleNamespace(
        transport=SimpleNamespace(ask=lambda pid, name, timeout: served[pid]),
        peer=SimpleNamespace(params=torch.zeros(4), stepper=stepper), ledger=Ledger((1, 2)),
        bad_servers=[], step=0,
    )
    assert SwarmNode._download(fake, 7, state_hash(good), [13, 11, 12], (1, 2), (3,))
    assert fake.bad_servers == [13, 11]
    assert torch.equal(fake.peer.params, good["params"]) and fake.step == 7
    assert 3 in fake.ledger.banned
    assert state_hash(good) != state_hash(bad)
    # a state every voter agrees on but of another model's size is refused, never loaded
    wide = dict(good, params=torch.arange(5.0))
    buf = io.BytesIO()
    torch.save(wide, buf)
    served[14] = buf.getvalue()
    fake.bad_servers.clear()
    assert not SwarmNode._download(fake, 7, state_hash(wide), [14], (1, 2), (3,))
    assert fake.bad_servers == [14] and fake.peer.params.shape == (4,)


def test_asking_many_peers_costs_one_timeout_and_skips_those_that_just_failed(pair) -> None:
    """A joiner polls every live peer for the agreed state's hash: killed peers (their live
    records not yet expired) must cost one timeout per poll at most, and none on the next
    polls, or the joiner falls behind the swarm's steps for good."""
    ta, tb, _ = pair
    c = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"],
                     initial_peers=[str(m) for m in ta.dht.get_visible_maddrs()])
    tc = HivemindTransport(c, "t", phase_timeout=5.0, max_bytes=4096)
    try:
        tb.handlers["hash"] = lambda: b"agreed"
        tc.handlers["hash"] = lambda: time.sleep(1.5) or b"late"  # hangs its peer's loop
        hanging = [tc.pid, 998, 999]  # three ids dialling the hanging peer
        ta.ids.update({tb.pid: tb.p2p.peer_id, **dict.fromkeys(hanging, tc.p2p.peer_id)})
        tic = time.monotonic()
        got = ta.ask_many([tb.pid, *hanging], "hash", timeout=1.0, skip_unreachable=30)
        took = time.monotonic() - tic
        assert got == {tb.pid: b"agreed", **dict.fromkeys(hanging)}
        assert 0.9 <= took < 2.5, took  # waited for together (one after the other: >= 3 s)
        assert set(ta.unreachable) >= set(hanging) and tb.pid not in ta.unreachable
        tic = time.monotonic()
        got = ta.ask_many([tb.pid, *hanging], "hash", timeout=1.0, skip_unreachable=30)
        assert got == {tb.pid: b"agreed", **dict.fromkeys(hanging)}
        assert time.monotonic() - tic < 0.9  # not asked again
        time.sleep(4.0)  # tc's loop is free again: asked once more without the skip, it answers
        assert ta.ask_many([tc.pid], "hash", timeout=15.0) == {tc.pid: b"late"}
        assert tc.pid not in ta.unreachable
    finally:
        tb.handlers.pop("hash", None)
        for pid in (tc.pid, 998, 999):
            ta.ids.pop(pid, None)
            ta.unreachable.pop(pid, None)
        tc.close()
        c.shutdown()


def test_a_non_member_is_refused_on_receipt_once_the_group_is_known(pair) -> None:
    ta, tb, ids = pair
    tb.begin_step(7, [tb.pid], {tb.pid: ids[tb.pid]})  # ta is not in tb's group this step
    before = tb.rejected.get("not a member", 0)
    _raw(ta, tb, to_bytes((7, "hello", Hello(7, b"x"))))     # refused at once, not buffered
    _raw(ta, tb, to_bytes((8, "hello", Hello(8, b"early"))))  # the next step's group: kept
    assert tb.rejected["not a member"] == before + 1
    assert ta.pid not in tb._box.get((7, "hello"), {}) and ta.pid in tb._box[(8, "hello")]


def test_messages_for_steps_whose_group_is_unknown_have_a_byte_budget(pair) -> None:
    from shieldwall.btard.swarm.transport import PHASES

    ta, tb, ids = pair
    tb.begin_step(10, sorted(ids), ids)
    budget, tb.max_early_bytes = tb.max_early_bytes, 8000
    try:
        before = tb.rejected.get("early messages over budget", 0)
        for phase in list(PHASES)[:4]:  # the next step: anyone may send, nobody is known yet
            _raw(ta, tb, to_bytes((11, phase, Hello(11, b"x" * 3000))))
        assert tb.rejected["early messages over budget"] == before + 2  # two fit in 8000 bytes
        tb.begin_step(11, sorted(ids), ids)  # their step began: no longer early, room again
        assert not tb._early
        _raw(ta, tb, to_bytes((12, list(PHASES)[0], Hello(12, b"x" * 3000))))
        assert tb.rejected["early messages over budget"] == before + 2
    finally:
        tb.max_early_bytes = budget


# ---- signed membership records --------------------------------------------------------------
def _signed_dht(path, initial=()):
    from hivemind.p2p import P2P

    from shieldwall.btard.swarm.identity import load_identity, signed_validator

    P2P.generate_identity(str(path))
    validator = signed_validator(load_identity(path))
    dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"], identity_path=str(path),
                       check_if_identity_free=False, initial_peers=list(initial),
                       record_validators=[validator])
    return dht, validator


def test_only_a_peer_itself_can_register_its_identity(tmp_path) -> None:
    """A hostile DHT node (no validator) forges registrations: another peer's plain peer id, and
    another peer's owner key with a made-up signature. Readers see only the signed record."""
    from hivemind.utils import get_dht_time

    from shieldwall.btard.swarm.identity import owner_peer_id

    a, va = _signed_dht(tmp_path / "a.key")
    maddrs = [str(m) for m in a.get_visible_maddrs()]
    b, vb = _signed_dht(tmp_path / "b.key", maddrs)
    c = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"], initial_peers=maddrs)
    nodes = []
    try:
        for dht, v in ((a, va), (b, vb)):  # the signing key names the libp2p identity
            assert owner_peer_id(v.local_public_key) == dht.peer_id.to_base58()
        ta = HivemindTransport(a, "s", phase_timeout=5.0, max_bytes=4096)
        tb = HivemindTransport(b, "s", phase_timeout=5.0, max_bytes=4096)
        nodes = [ta, tb]
        node_a = SimpleNamespace(dht=a, opts=SimpleNamespace(prefix="s"), validator=va,
                                 transport=ta, _unsigned=set(), _public={})
        node_b = SimpleNamespace(dht=b, opts=SimpleNamespace(prefix="s"), validator=vb,
                                 transport=tb, _unsigned=set(), _public={})
        node_a._owner, node_b._owner = va.local_public_key, vb.local_public_key
        SwarmNode._store(node_a, "step.3", 1.5)
        expire = get_dht_time() + 600
        absent = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"  # a made-up peer id
        assert c.store("s.step.3", 2.0, expire, subkey=absent)  # unprotected: stored, not read
        forged = vb.local_public_key  # b's key, signed by nobody: every validating node refuses
        c.store("s.step.3", 3.0, expire, subkey=forged)
        assert not a.store("s.step.3", 4.0, expire, subkey=forged)  # a cannot sign for b
        time.sleep(0.5)
        for reader in (node_a, node_b):
            got = SwarmNode._read(reader, "step.3")
            assert got == {a.peer_id.to_base58(): 1.5}
            assert reader.transport.rejected["unsigned record"] == 1
        SwarmNode._read(node_b, "step.3")  # a record read again is not counted again
        assert tb.rejected["unsigned record"] == 1
        # a's protocol key is the one its registration was signed with: it hashes to a's peer
        # id, and a's protocol signatures (same identity key) verify with it
        from shieldwall.btard.crypto import rsa_keypair, verify_signature
        from shieldwall.btard.swarm.identity import load_identity, peer_id_of

        public = node_b._public[ta.pid]
        assert peer_id_of(public) == a.peer_id.to_base58() and list(node_b._public) == [ta.pid]
        key_a = rsa_keypair(load_identity(tmp_path / "a.key"))
        assert key_a.public == public
        assert verify_signature("rsa", public, b"evidence", key_a.sign(b"evidence"))
        ring = {tb.pid: b"mine"}
        node_b.peer = SimpleNamespace(keyring=ring)
        SwarmNode._keys(node_b, {ta.pid: a.peer_id, 12345: a.peer_id})  # 12345: never registered
        assert ring == {tb.pid: b"mine", ta.pid: public}
    finally:
        for t in nodes:
            t.close()
        for d in (a, b, c):
            d.shutdown()


def test_an_identity_file_that_is_not_an_rsa_key_is_one_line(tmp_path) -> None:
    from hivemind.proto import crypto_pb2

    from shieldwall.btard.swarm.identity import IdentityError, load_identity, owner_peer_id

    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"\xff" * 40)
    with pytest.raises(IdentityError, match="not a libp2p private key"):
        load_identity(garbage)
    ed = tmp_path / "ed.key"
    ed.write_bytes(crypto_pb2.PrivateKey(key_type=crypto_pb2.Ed25519,
                                         data=b"x" * 64).SerializeToString())
    with pytest.raises(IdentityError, match="Ed25519 key.*RSA"):
        load_identity(ed)
    for subkey in ("Qm...", b"[owner:ssh-rsa AAAA]", b"[owner:ssh-ed25519 AAAA]", b"x" * 5000, 7):
        assert owner_peer_id(subkey) is None
