"""Merging a swarm's per-peer logs (no hivemind needed): hand-made peer directories."""

from __future__ import annotations

import json
from pathlib import Path

from shieldwall.btard.swarm.logs import merge, plot
from shieldwall.cli import main


def _peer(root: Path, name: str, byzantine: bool, rows: list[dict]) -> None:
    d = root / name
    d.mkdir()
    (d / "identity.json").write_text(json.dumps({"pid": hash(name) % 1000,
                                                 "byzantine": byzantine}))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(r: int, loss: float | None, banned: list[int] = (), taken: bool = True) -> dict:
    return {"round": r, "train_loss": loss, "step_taken": taken,
            "banned": [{"peer": p, "round": r, "reason": "bad_gradient"} for p in banned]}


def test_merge_joins_peers_that_came_and_went(tmp_path: Path) -> None:
    _peer(tmp_path, "a", False, [_row(0, 2.0, [7], taken=False), _row(1, 1.5), _row(2, 1.0)])
    _peer(tmp_path, "b", False, [_row(0, 2.0, [7], taken=False), _row(1, 1.5)])  # died
    _peer(tmp_path, "c", False, [_row(2, 1.0), _row(3, 0.5, [9])])             # joined
    _peer(tmp_path, "z", True, [_row(r, 99.0, [1, 2]) for r in range(4)])       # Byzantine
    got = merge([tmp_path])
    assert [r["peers"] for r in got] == [2, 2, 2, 1]
    assert [r["train_loss"] for r in got] == [2.0, 1.5, 1.0, 0.5]
    assert [r["banned_total"] for r in got] == [1, 1, 1, 2]  # the Byzantine log is ignored
    assert [r["step_taken"] for r in got] == [False, True, True, True]
    assert not any(r["disagree"] for r in got)
    assert plot(got, tmp_path / "p.png", (1, None)).stat().st_size > 1000


def test_cli_writes_plot_and_rejects_a_missing_dir(tmp_path: Path, capsys) -> None:
    _peer(tmp_path, "a", False, [_row(0, 2.0), _row(1, 1.0, [3])])
    out = tmp_path / "s.png"
    assert main(["swarm-plot", str(tmp_path), "-o", str(out), "--jsonl",
                 str(tmp_path / "m.jsonl")]) == 0
    assert out.exists() and len((tmp_path / "m.jsonl").read_text().splitlines()) == 2
    assert main(["swarm-plot", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_torn_or_foreign_peer_files_are_one_line(tmp_path: Path, capsys) -> None:
    _peer(tmp_path, "a", False, [_row(0, 2.0)])
    (tmp_path / "a" / "metrics.jsonl").write_text('{"round": 0}\n[1]\n')
    cases = [("metrics.jsonl", "line 2 is not a JSON record"),
             ("identity.json", "identity.json' must hold a JSON object, got list")]
    for name, needle in cases:
        if name == "identity.json":
            (tmp_path / "a" / name).write_text("[1]")
        assert main(["swarm-plot", str(tmp_path), "-o", str(tmp_path / "s.png")]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    # a line torn by a killed peer is left out, as in a run's metrics
    (tmp_path / "a" / "identity.json").write_text("{}")
    (tmp_path / "a" / "metrics.jsonl").write_text(json.dumps(_row(0, 2.0)) + '\n{"rou')
    assert [r["round"] for r in merge([tmp_path])] == [0]

