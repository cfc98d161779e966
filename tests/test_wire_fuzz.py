"""Fuzzing every wire decoder with random and mutated frames: no decoder ever crashes, and every
frame is judged — accepted (and then it satisfies every check) or rejected with a reason.

Decoders: the gRPC runtime's frames (:func:`shieldwall.runtime.net.wire.decode`, the client's
:func:`~shieldwall.runtime.net.wire.check_round`, the server's
:func:`~shieldwall.runtime.net.rows.read_row`), the torch.distributed runtime's frames
(:func:`shieldwall.runtime.wire.decode_frame`, :func:`~shieldwall.runtime.wire.decode_task`)
and BTARD's messages (:func:`shieldwall.btard.wire.from_bytes`, then
:func:`~shieldwall.btard.messages.signed_ok`). Mutations start from valid frames: flipped and
overwritten bytes, truncation, insertion, and header fields replaced by arbitrary JSON values.
Derandomised and without deadlines, so that the suite is fast and never flaky.
"""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shieldwall.train  # noqa: F401  (algorithms before the runtime package)
from shieldwall.btard import messages as btard_messages
from shieldwall.btard import wire as btard_wire
from shieldwall.btard.crypto import make_keypair
from shieldwall.runtime import wire as td_wire
from shieldwall.runtime.net import wire as net_wire
from shieldwall.runtime.net.rows import read_row
from shieldwall.runtime.net.wire import Kind, WireError

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DIM, CAP, MAX_NORM = 8, 50, 1e3

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """``valid`` with a few random byte-level edits."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "drop"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "drop" and data:
            del data[pos]
    return bytes(data)


# --------------------------------------------------------------- gRPC runtime: frames
def upload_header(**change) -> dict:
    head = {"round": 3, "nonce": "ab" * 16, "num_samples": 20, "loss": 0.5,
            "dtype": "float32", "shape": [DIM], "nbytes": 4 * DIM}
    head.update(change)
    return head


def valid_net_frames() -> list[bytes]:
    row = net_wire.tensor_bytes(torch.randn(DIM))
    return [
        net_wire.encode(Kind.HELLO, {"instance": "x", "silo": 1, "ready": True}),
        net_wire.encode(Kind.WELCOME, {"session": "s", "dim": DIM, "poll": 5.0}),
        net_wire.encode(Kind.ROUND, {"round": 1, "nonce": "n" * 32, "index": 0, "clients": [0, 1],
                                     "poisoned": False, "dtype": "float32", "shape": [DIM],
                                     "nbytes": 4 * DIM}),
        net_wire.encode(Kind.UPLOAD, upload_header()),
        net_wire.encode(Kind.CHUNK, None, row),
        net_wire.encode(Kind.ACK, {"accepted": True, "reason": None}),
    ]


def judge_net_frame(data: bytes) -> None:
    try:
        frame = net_wire.decode(data)
    except WireError as exc:
        assert str(exc)
        return
    assert data[:2] == b"SW" and frame.kind == data[3] and isinstance(frame.header, dict)
    if frame.kind == Kind.ROUND:
        try:
            rnd = net_wire.check_round(frame.header)
        except WireError as exc:
            assert str(exc)
        else:
            assert rnd.index in rnd.clients and rnd.dtype in net_wire.DTYPES


@FUZZ
@given(st.binary(max_size=300))
def test_grpc_random_bytes_are_judged(data):
    judge_net_frame(data)
    judge_net_frame(b"SW\x01" + data)  # past the magic and version, into the rest


@FUZZ
@given(st.data())
def test_grpc_mutated_frames_are_judged(data):
    valid = data.draw(st.sampled_from(valid_net_frames()))
    judge_net_frame(data.draw(mutated(valid)))


def judge_upload(head: dict, frames: list[bytes]) -> None:
    answer = read_row(head, iter(frames), DIM, torch.float32, MAX_NORM, CAP)
    assert (answer.row is None) == (answer.reason is not None)
    if answer.row is not None:  # accepted: every check holds
        assert answer.row.shape == (DIM,) and answer.row.dtype == torch.float32
        assert bool(torch.isfinite(answer.row).all())
        assert float(torch.linalg.vector_norm(answer.row)) <= MAX_NORM
        assert 1 <= answer.num_samples <= CAP and answer.num_samples == int(answer.num_samples)
        assert math.isfinite(answer.loss) and answer.loss >= 0


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(upload_header())), json_values, max_size=4),
       st.lists(st.binary(max_size=40), max_size=3))
def test_grpc_upload_headers_with_any_field_values_are_judged(change, payloads):
    head = json.loads(json.dumps(upload_header(**change), allow_nan=True))
    frames = [net_wire.encode(Kind.CHUNK, None, p) for p in payloads]
    judge_upload(head, frames)


@FUZZ
@given(st.data())
def test_grpc_upload_streams_with_mutated_chunks_are_judged(data):
    row = net_wire.tensor_bytes(torch.randn(DIM))
    frames = [net_wire.encode(Kind.CHUNK, None, row[:12]), net_wire.encode(Kind.CHUNK, None,
                                                                           row[12:])]
    i = data.draw(st.integers(0, 1))
    frames[i] = data.draw(mutated(frames[i]))
    judge_upload(upload_header(), frames)


@FUZZ
@given(st.dictionaries(st.sampled_from(["round", "nonce", "index", "clients", "poisoned",
                                        "dtype", "shape", "nbytes"]), json_values, max_size=4))
def test_grpc_round_headers_with_any_field_values_are_judged(change):
    head = {"round": 1, "nonce": "n" * 32, "index": 0, "clients": [0, 1], "poisoned": False,
            "dtype": "float32", "shape": [DIM], "nbytes": 4 * DIM, **change}
    try:
        rnd = net_wire.check_round(head)
    except WireError as exc:
        assert str(exc)
    else:
        assert isinstance(rnd.round, int) and rnd.index in rnd.clients
        assert rnd.nbytes == math.prod(rnd.shape) * (2 if "16" in rnd.dtype else
                                                     4 if "32" in rnd.dtype else 8)


@pytest.mark.parametrize("shape", [[0, 10**30], [0, 2**62], [10**30, 0, 10**30]])
def test_an_empty_shape_with_a_huge_dimension_is_a_reason_not_an_exception(shape):
    # 0 values, 0 bytes: every size check passed, then torch.empty raised (TypeError)
    head = upload_header(shape=shape, nbytes=0)
    answer = read_row(head, iter([]), DIM, torch.float32, MAX_NORM, CAP)
    assert answer.row is None and "too large" in str(answer.reason)


def test_the_honest_upload_is_accepted_and_a_sample_claim_above_the_shard_is_not():
    row = net_wire.tensor_bytes(torch.ones(DIM))
    ok = read_row(upload_header(), iter([net_wire.encode(Kind.CHUNK, None, row)]), DIM,
                  torch.float32, MAX_NORM, CAP)
    assert ok.reason is None and ok.num_samples == 20
    liar = read_row(upload_header(num_samples=1e15), iter([]), DIM, torch.float32, MAX_NORM, CAP)
    assert liar.row is None and "num_samples 1e+15 outside [1, 50]" in liar.reason


# ------------------------------------------------------ torch.distributed runtime: frames
FRAME_BYTES = td_wire.frame_nbytes(DIM, torch.float32)


def judge_td_frame(frame: torch.Tensor) -> None:
    got = td_wire.decode_frame(frame, round=3, client_id=7, dim=DIM, dtype=torch.float32,
                               max_norm=MAX_NORM, max_samples=CAP)
    assert (got.row is None) == (got.reason is not None)
    if got.row is not None:
        assert got.row.shape == (DIM,) and bool(torch.isfinite(got.row).all())
        assert 1 <= got.num_samples <= CAP and math.isfinite(got.loss) and got.loss >= 0


def valid_td_frame() -> bytes:
    out = torch.zeros(FRAME_BYTES, dtype=torch.uint8)
    td_wire.encode_frame(out, 3, 7, torch.randn(DIM), num_samples=20, loss=0.5)
    return out.numpy().tobytes()


def as_frame(data: bytes) -> torch.Tensor:
    data = (data + bytes(FRAME_BYTES))[:FRAME_BYTES]  # the receive buffer has a fixed size
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


@FUZZ
@given(st.binary(min_size=FRAME_BYTES, max_size=FRAME_BYTES))
def test_torch_dist_random_frames_are_judged(data):
    judge_td_frame(as_frame(data))


@FUZZ
@given(st.data())
def test_torch_dist_mutated_frames_are_judged(data):
    judge_td_frame(as_frame(data.draw(mutated(valid_td_frame()))))


@FUZZ
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=16, max_size=16),
       st.sets(st.integers(0, 15), max_size=16))
def test_torch_dist_header_words_with_any_values_are_judged(words, keep):
    frame = bytearray(valid_td_frame())
    original = struct.unpack("<16q", frame[:128])
    header = [original[i] if i in keep else w for i, w in enumerate(words)]
    frame[:128] = struct.pack("<16q", *header)
    judge_td_frame(as_frame(bytes(frame)))


@FUZZ
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=0, max_size=12))
def test_torch_dist_task_headers_are_judged(words):
    slots = 2
    header = torch.tensor(words, dtype=torch.int64)
    try:
        task = td_wire.decode_task(header, DIM, slots)
    except ValueError as exc:
        assert str(exc)
    else:
        assert task.kind in (td_wire.ROUND, td_wire.STOP) and len(task.client_ids) <= slots


# ------------------------------------------------------------------ BTARD: messages
KEY = make_keypair("hmac", b"k" * 32)


def btard_valid() -> list[bytes]:
    part = btard_messages.Part(2, 1, torch.randn(DIM))
    signed = btard_messages.sign(KEY, 1, part)
    msgs = [
        btard_messages.Hello(2, b"c" * 32),
        btard_messages.Commit(2, (b"h" * 32, b"i" * 32), 0.5),
        btard_messages.ResultCommit(2, b"r" * 32, 1.5, (0, 1, 2), (3,), 7, 1),
        btard_messages.Check(2, (0.5, None, 1.0)),
        btard_messages.Accuse(2, (btard_messages.Accusation("bad_part", 0, 1, 1),), (("part", 3),)),
        btard_messages.Signed(1, part, b"s" * 32),
        signed,
    ]
    return [btard_wire.to_bytes(m) for m in msgs]


def judge_btard(raw: bytes) -> None:
    msg = btard_wire.from_bytes(raw)  # never raises: malformed is None (silence)
    if msg is None:
        return
    # whatever decodes is plain data or a whitelisted message; the protocol's checks judge it
    ok = btard_messages.signed_ok(msg, 1, btard_messages.Part, 2, "hmac", {1: KEY.public},
                                  index=1)
    if ok:  # accepted as signed: the protocol then checks the part's form
        assert isinstance(msg.body.tensor, torch.Tensor)
        btard_messages.well_formed(msg.body.tensor, DIM, torch.float32)


@FUZZ
@given(st.binary(max_size=300))
def test_btard_random_bytes_are_judged(raw):
    judge_btard(raw)


@FUZZ
@given(st.data())
def test_btard_mutated_messages_are_judged(data):
    valid = data.draw(st.sampled_from(btard_valid()))
    judge_btard(data.draw(mutated(valid)))


@pytest.mark.parametrize("plain", [
    ("T", "torch.float32", (4,), b"\0" * 3),  # bytes do not fill the shape
    ("T", "torch.float32", (1 << 40,), b""),  # a huge shape
    ("T", "torch.int64", (1,), b"\0" * 8),  # a dtype outside the whitelist
    ("D", "os.system", ()),  # not a message class
    ("D", "Hello", (("v", 1),)),  # a field missing
    ("v", object()),  # not plain data
    ("x",),  # unknown tag
])
def test_btard_plain_data_outside_the_grammar_is_silence(plain):
    assert btard_wire.decode(plain) is None


@pytest.mark.parametrize("change", [{"dtype": "x" * 60000}, {"shape": ["y" * 60000]},
                                    {"nbytes": "z" * 60000}, {"num_samples": "w" * 60000}])
def test_a_rejection_quoting_client_text_is_bounded(change):
    # reasons are logged and kept in metrics.jsonl every round: a 60 KB header field must not
    # become a 60 KB line per Byzantine client per round
    from shieldwall.runtime.net.rows import MAX_REASON

    answer = read_row(upload_header(**change), iter([]), DIM, torch.float32, MAX_NORM, CAP)
    assert answer.row is None and len(answer.reason) <= MAX_REASON + 40
