"""BTARD numerics and primitives: ButterflyClip, the CenteredClip check, hashes, signatures,
MPRNG and the safe wire format."""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.btard.clip import (
    assemble,
    butterfly_clip,
    centered_clip_fixed_point,
    checksum,
    clip_residual,
    residual_tolerance,
    split_parts,
    split_sizes,
)
from shieldwall.btard.crypto import (
    make_keypair,
    mprng_commitment,
    mprng_seed,
    tensor_digest,
    verify_signature,
)
from shieldwall.btard.messages import Commit, Hello, Part, Signed, sign
from shieldwall.btard.wire import from_bytes, to_bytes

torch.set_num_threads(1)


def _rows(n: int, d: int, seed: int, spread: float = 1.0, outliers: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * spread + 0.5
    if outliers:
        x[:outliers] = -100.0 * x[:outliers]
    return x


@settings(max_examples=50, deadline=None)
@given(d=st.integers(0, 200), n=st.integers(1, 20))
def test_split_covers_vector_contiguously(d: int, n: int) -> None:
    sizes = split_sizes(d, n)
    assert sum(sizes) == d and len(sizes) == n and max(sizes) - min(sizes) <= 1
    v = torch.arange(d, dtype=torch.float32)
    assert torch.equal(assemble(split_parts(v, n)), v)


def test_centered_clip_reaches_verifiable_fixed_point() -> None:
    x = _rows(9, 40, 0, outliers=4)  # 4 of 9 rows far away: heavily clipped
    tau = 0.5
    res = centered_clip_fixed_point(x, tau, rel_tol=1e-4)
    rho = residual_tolerance(9, tau, float(res.vector.norm()), 1e-4)
    assert float(clip_residual(x, res.vector, tau).norm()) <= rho
    assert res.num_clipped >= 4
    honest_mean = x[4:].mean(0)
    assert float((res.vector - honest_mean).norm()) < float((x.mean(0) - honest_mean).norm()) / 10


def test_fixed_point_agrees_with_many_fixed_step_iterations() -> None:
    """IRLS and the plain CenteredClip iteration v += mean(clip(x - v)) share the fixed point."""
    x = _rows(7, 12, 1, spread=2.0, outliers=2)
    tau = 1.0
    v = x.double().median(0).values
    for _ in range(5000):
        v = v + clip_residual(x, v, tau) / 7
    res = centered_clip_fixed_point(x, tau, iterations=0, rel_tol=1e-8)
    assert torch.allclose(res.vector.double(), v, atol=1e-5)


def test_per_part_equals_whole_vector_only_without_clipping_or_with_one_part() -> None:
    """BTARD clips each part by its own L2 norm. Exactly two equalities hold:

    * with one part, ButterflyClip *is* CenteredClip of the whole vectors;
    * when no row is clipped (tau above every distance), both are the mean.

    With clipping active and several parts the results differ in general, and the butterfly
    result is always the concatenation of the per-part CenteredClips.
    """
    x = _rows(5, 23, 2, outliers=1)
    whole = centered_clip_fixed_point(x, 0.7, rel_tol=1e-7).vector
    one_part = assemble([centered_clip_fixed_point(p, 0.7, rel_tol=1e-7).vector
                         for p in split_parts_rows(x, 1)])
    assert torch.allclose(one_part, whole, atol=1e-5)

    big_tau = 1e6
    assert torch.allclose(butterfly_clip(x, big_tau, rel_tol=1e-9), x.mean(0), atol=1e-5)
    assert torch.allclose(centered_clip_fixed_point(x, big_tau).vector, x.mean(0), atol=1e-5)

    per_part = butterfly_clip(x, 0.7, rel_tol=1e-7)
    assert not torch.allclose(per_part, whole, atol=1e-3)
    manual = assemble([centered_clip_fixed_point(p, 0.7, rel_tol=1e-7).vector
                       for p in split_parts_rows(x, 5)])
    assert torch.allclose(per_part, manual, atol=1e-6)


def split_parts_rows(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    return list(torch.split(x, split_sizes(x.shape[1], n), dim=1))


@pytest.mark.parametrize("seed", range(5))
def test_checksum_accepts_honest_and_rejects_tampered_part(seed: int) -> None:
    x = _rows(8, 30, seed, outliers=3)
    tau, kappa = 1.0, 8.0
    res = centered_clip_fixed_point(x, tau)
    rho = residual_tolerance(8, tau, float(res.vector.norm()), 1e-4)
    tampered = res.vector + 0.5 * tau * torch.ones(30) / 30**0.5
    rejected = 0
    for k in range(20):
        z = torch.randn(30, generator=torch.Generator().manual_seed(100 * seed + k),
                        dtype=torch.float64)
        honest_sum = sum(checksum(row, res.vector, z, tau) for row in x)
        assert abs(honest_sum) <= kappa * rho
        rejected += abs(sum(checksum(row, tampered, z, tau) for row in x)) > kappa * rho
    assert rejected >= 18  # a random projection can be small: most directions reject


def test_tampered_part_rejected_for_most_directions() -> None:
    x = _rows(8, 30, 9, outliers=3)
    tau = 1.0
    res = centered_clip_fixed_point(x, tau)
    rho = residual_tolerance(8, tau, float(res.vector.norm()), 1e-4)
    tampered = res.vector.clone()
    tampered[0] += 2 * tau
    rejected = 0
    for k in range(200):
        z = torch.randn(30, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        rejected += abs(sum(checksum(row, tampered, z, tau) for row in x)) > 8 * rho
    assert rejected >= 195


def test_tensor_digest_is_bit_exact() -> None:
    t = torch.arange(6, dtype=torch.float32)
    assert tensor_digest(t) == tensor_digest(t.clone())
    u = t.clone()
    u[3] = torch.nextafter(u[3], torch.tensor(10.0))
    assert tensor_digest(u) != tensor_digest(t)
    assert tensor_digest(t.double()) != tensor_digest(t)
    assert tensor_digest(t.reshape(2, 3)) != tensor_digest(t)


@pytest.mark.parametrize("scheme", ["hmac", "ed25519"])
def test_signatures_verify_and_reject_forgery(scheme: str) -> None:
    if scheme == "ed25519":
        pytest.importorskip("cryptography")
    key, other = make_keypair(scheme, b"a" * 32), make_keypair(scheme, b"b" * 32)
    msg = sign(key, 3, Part(1, 0, torch.ones(4)))
    ring = {3: key.public, 4: other.public}
    assert msg.verify(scheme, ring)
    forged = Signed(3, Part(1, 0, torch.ones(4) * 2), msg.signature)
    assert not forged.verify(scheme, ring)
    assert not Signed(4, msg.body, msg.signature).verify(scheme, ring)
    assert not verify_signature(scheme, key.public, b"x", b"not a signature")


def test_mprng_seed_order_independent_and_binding() -> None:
    secrets = {0: b"\x01" * 32, 1: b"\x02" * 32, 5: b"\x03" * 32}
    assert mprng_seed(3, secrets) == mprng_seed(3, dict(reversed(list(secrets.items()))))
    assert mprng_seed(3, secrets) != mprng_seed(4, secrets)
    assert mprng_seed(3, secrets) != mprng_seed(3, {**secrets, 5: b"\x04" * 32})
    assert mprng_commitment(b"\x01" * 32) != mprng_commitment(b"\x02" * 32)


def test_wire_round_trip_and_refuses_arbitrary_pickles() -> None:
    key = make_keypair("hmac", b"k" * 32)
    msg = sign(key, 2, Part(7, 1, torch.randn(5)))
    back = from_bytes(to_bytes(msg))
    assert isinstance(back, Signed) and torch.equal(back.body.tensor, msg.body.tensor)
    assert back.verify("hmac", {2: key.public})
    commit = from_bytes(to_bytes(Commit(1, (b"a", b"b"), 0.5)))
    assert commit.part_hashes == (b"a", b"b") and commit.loss == 0.5

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    assert from_bytes(pickle.dumps(Evil())) is None
    assert from_bytes(b"garbage") is None
    assert from_bytes(pickle.dumps(("D", "NotAMessage", ()))) is None


def test_wire_refuses_a_small_message_that_decodes_to_a_huge_one() -> None:
    import time

    # pickle's memo lets one sub-object be referenced many times: 30 levels of [x, x] are a
    # few hundred bytes that _decode would expand to 2**30 leaves
    data = ("T", "torch.float32", (4,), b"\0" * 16)
    for _ in range(30):
        data = ("l", [data, data])
    raw = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(raw) < 1000
    start = time.perf_counter()
    assert from_bytes(raw) is None
    assert time.perf_counter() - start < 1.0
    # honest messages, however many parts, stay within the budget
    key = make_keypair("hmac", b"k" * 32)
    many = [sign(key, 2, Part(7, i, torch.randn(3))) for i in range(200)]
    back = from_bytes(to_bytes(many))
    assert back is not None and len(back) == 200
    assert from_bytes(to_bytes(Commit(1, tuple(b"h" * 32 for _ in range(64)), 0.5))) is not None


class _LyingDist:
    """torch.distributed for rank 0 of two, where rank 1 announces ``lie`` bytes."""

    def __init__(self, lie: int) -> None:
        self.lie, self.buffer_bytes = lie, None

    def all_gather(self, outs, t, group=None) -> None:
        if t.dtype == torch.int64 and t.numel() == 1:  # the sizes
            outs[0].copy_(t)
            outs[1].fill_(self.lie)
        else:  # the payloads: rank 1 sends nothing usable
            self.buffer_bytes = t.numel()
            outs[0].copy_(t)

    def all_to_all_single(self, out, inp, group=None, **splits) -> None:
        if not splits:
            out.copy_(torch.tensor([0, self.lie]))


@pytest.mark.parametrize("lie", [-5, (1 << 30) + 1, 1 << 62])
def test_torch_dist_transport_refuses_sizes_peers_announce_before_allocating(lie) -> None:
    from shieldwall.btard.transport import PeerTimeout, TorchDistTransport, Traffic

    tr = TorchDistTransport.__new__(TorchDistTransport)  # no process group: a fake dist
    tr.peers = tr.members = (0, 1)
    tr.local, tr.rank, tr._group, tr.traffic = (0,), 0, None, Traffic()
    tr.max_bytes = 1 << 30
    tr._dist = _LyingDist(lie)
    got = tr.broadcast("hello", {0: Hello(1, b"c" * 8)})
    assert got[1] is None and isinstance(got[0], Hello)  # the liar is silent
    assert tr._dist.buffer_bytes == len(to_bytes(Hello(1, b"c" * 8)))  # sized by honest ones
    with pytest.raises(PeerTimeout, match=f"peer 1 announced a {lie}-byte message"):
        tr.exchange("scatter", {0: {}})
