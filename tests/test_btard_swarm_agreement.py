"""The joining peer's choice of state: strict majority of answering identities, bans in the
answer respected, malformed answers ignored; downloaded states checked field by field."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from shieldwall.btard.swarm.agreement import majority_answer, matching_state, state_hash
from shieldwall.btard.wire import to_bytes
from shieldwall.checkpoint import check_archive, read_torch_file

A = (5, b"a" * 32, (1, 2, 4), (3,))  # step 5, its hash, group, banned: peer 3
B = (5, b"b" * 32, (1, 2, 3, 4), ())


def raw(answer) -> bytes:
    return to_bytes(answer)


def test_a_strict_majority_of_the_answering_peers_wins():
    assert majority_answer({1: raw(A), 2: raw(A), 3: raw(B), 4: None}) == (A, [1, 2])
    assert majority_answer({1: raw(A), 2: raw(B)}) is None  # 1 of 2 is no majority
    assert majority_answer({}) is None


def test_peers_the_answer_bans_do_not_count_against_it():
    # 2 votes each; A bans peer 3, so A needs a majority of {1, 2, 4} only: 2 of 3
    assert majority_answer({1: raw(A), 2: raw(A), 3: raw(B), 4: raw(B)}) == (A, [1, 2])
    # a banned peer cannot vote for an answer that bans it
    c = (6, b"c" * 32, (1,), (2,))
    assert majority_answer({1: raw(c), 2: raw(c)}) is None


def test_malformed_answers_are_not_votes():
    junk = [b"\x80garbage", raw((5, "not bytes", (1,), ())), raw((5.0, b"h", (1,), ())),
            raw((5, b"h", (1, "2"), ())), raw((5, b"h", (1,))), raw([5, b"h", (1,), ()])]
    answers = {10 + i: j for i, j in enumerate(junk)}
    assert majority_answer({**answers, 1: raw(B)}) == (B, [1])


def test_a_downloaded_state_must_match_the_answer_in_every_field():
    state = {"step": 5, "params": torch.arange(3.0), "optimizer": {}, "group": [1, 2, 4],
             "ledger": {"banned": {3: (0, "bad_gradient")}, "silences": {}}}
    buf = io.BytesIO()
    torch.save(state, buf)
    answer = (5, state_hash(state), (1, 2, 4), (3,))
    got = matching_state(buf.getvalue(), answer, torch.Size([3]))
    assert got is not None and torch.equal(got["params"], state["params"])
    assert matching_state(buf.getvalue(), answer, torch.Size([4])) is None  # another model
    assert matching_state(buf.getvalue(), (6, *answer[1:]), torch.Size([3])) is None
    assert matching_state(buf.getvalue(), (5, b"x" * 32, (1, 2, 4), (3,)), torch.Size([3])) is None
    assert matching_state(b"not a state", answer, torch.Size([3])) is None
    assert matching_state(None, answer, torch.Size([3])) is None


def _deflated(archive: bytes, grow: dict[str, int] | None = None) -> bytes:
    """``archive`` rewritten with deflated entries; ``grow`` replaces an entry by that many
    zero bytes (written in chunks: 64 MiB of zeros deflate to about 64 KiB)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            with dst.open(name, "w", force_zip64=True) as fh:
                if grow and name.split("/", 1)[-1] in grow:
                    for _ in range(grow[name.split("/", 1)[-1]] >> 20):
                        fh.write(bytes(1 << 20))
                else:
                    fh.write(src.read(name))
    return out.getvalue()


def test_a_compressed_state_is_refused_before_it_is_inflated(monkeypatch):
    """torch.load inflates deflated entries: a 1 MB message of zeros made a joining peer
    allocate 1 GiB (64 GiB under the 64 MiB message cap). torch.save never compresses, so a
    compressed entry is refused before torch.load sees the bytes."""
    state = {"step": 5, "params": torch.zeros(3), "optimizer": {}, "group": [1, 2, 4],
             "ledger": {"banned": {3: (0, "bad_gradient")}, "silences": {}}}
    buf = io.BytesIO()
    torch.save(state, buf)
    answer = (5, state_hash(state), (1, 2, 4), (3,))
    assert matching_state(buf.getvalue(), answer, torch.Size([3])) is not None
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    assert matching_state(_deflated(buf.getvalue()), answer, torch.Size([3])) is None
    bomb = _deflated(buf.getvalue(), grow={"data/0": 64 << 20})
    assert len(bomb) < 1 << 20
    assert matching_state(bomb, answer, torch.Size([3])) is None
    assert loads == []  # refused from the archive's directory, nothing inflated
    with pytest.raises(ValueError, match="compressed"):
        check_archive(bomb)


def test_a_compressed_state_file_is_one_line(tmp_path):
    path = tmp_path / "state.pt"
    buf = io.BytesIO()
    torch.save({"step": 1, "params": torch.zeros(3)}, buf)
    path.write_bytes(_deflated(buf.getvalue()))
    with pytest.raises(ValueError, match=r"state file '.*state.pt' cannot be read .*compressed"):
        read_torch_file(path, "state file")
