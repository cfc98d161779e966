"""Whole-or-nothing writes (:mod:`shieldwall.atomic`) and the files written through them."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from shieldwall.atomic import save_atomic, write_text_atomic
from shieldwall.fault_tolerance import datacoll


def _full_disk_after(nbytes: int):
    """A ``Path.write_text`` that writes ``nbytes`` characters, then fails as a full disk does."""

    def write_text(self: Path, text: str, *args: object, **kwargs: object) -> int:
        with self.open("w") as fh:
            fh.write(text[:nbytes])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    return write_text


def test_text_is_replaced_whole(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    assert write_text_atomic(path, "new") == path
    assert path.read_text() == "new" and sorted(tmp_path.iterdir()) == [path]


def test_failed_text_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    path.write_text("old")
    monkeypatch.setattr(Path, "write_text", _full_disk_after(2))
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(path, "new content")
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]


def test_failed_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"round": 1, "params": torch.ones(3)}, path)

    def torn_save(obj: object, f: Path, *args: object, **kwargs: object) -> None:
        Path(f).write_bytes(b"PK\x03\x04 torn")
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError):
        save_atomic({"round": 2, "params": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = torch.load(path)
    assert state["round"] == 1 and torch.equal(state["params"], torch.ones(3))
    assert sorted(tmp_path.iterdir()) == [path]


def test_interrupted_datacoll_index_rewrite_keeps_every_earlier_shard(tmp_path, monkeypatch):
    """``meta.json`` is rewritten after every shard; a failure there used to truncate it, which
    made the whole collection unreadable. Now the index of the earlier shards survives."""
    coll = datacoll.DataCollector(tmp_path / "coll", dim=2, config={"fault": "bitflip"})
    row = torch.tensor([1.0, 2.0])
    coll.write(4, [(0, 1, row, row, row)])
    monkeypatch.setattr(Path, "write_text", _full_disk_after(10))
    with pytest.raises(OSError):
        coll.write(8, [(1, 0, row, row, row)])
    monkeypatch.undo()
    data = datacoll.load(tmp_path / "coll")
    assert len(data) == 1 and data.step.tolist() == [4]
    assert data.meta["config"]["fault"] == "bitflip"
    meta = json.loads((tmp_path / "coll" / "meta.json").read_text())
    assert meta["shards"] == ["step-000004.npz"]
