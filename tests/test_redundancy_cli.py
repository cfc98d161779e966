"""``shieldwall placement analyse`` handler and ByzShield's names."""

from __future__ import annotations

import argparse
import json

import pytest

from shieldwall.commands import placement as command
from shieldwall.redundancy import build_placement
from shieldwall.redundancy import byzshield_names as names
from shieldwall.redundancy.analysis import distorted_files


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shieldwall")
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_analyse_mols_15_3(capsys):
    argv = ["placement", "analyse", "--scheme", "mols", "--workers", "15", "--replication", "3",
            "--adversaries", "0..7"]
    assert _run(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("placement mols: K=15 workers, F=25 files, r=3")
    rows = [ln.split() for ln in lines[2:]]
    assert [int(r[0]) for r in rows] == list(range(8))
    assert [int(r[1]) for r in rows] == [0, 0, 1, 3, 5, 8, 12, 14]
    assert [r[2] for r in rows] == ["0.0000", "0.0000", "0.0400", "0.1200", "0.2000", "0.3200",
                                    "0.4800", "0.5600"]
    assert all(r[3] == "yes" for r in rows)
    p = build_placement("mols", 15, 3)
    for q, line in enumerate(lines[2:]):
        adversaries = json.loads(line[line.index("["):])
        assert len(set(adversaries)) == q
        assert distorted_files(p, adversaries) == int(rows[q][1])


def test_analyze_alias_json_and_detox(capsys):
    assert _run(["placement", "analyze", "--scheme", "draco-lite", "-K", "15", "-r", "3",
                 "-q", "0..7", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["placement"]["name"] == "detox" and out["majority"] == 2
    assert [r["c_max"] for r in out["rows"]] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [r["epsilon"] for r in out["rows"]][2:] == [0.2, 0.2, 0.4, 0.4, 0.6, 0.6]


def test_rama_two_with_m_and_show_then_file(tmp_path, capsys):
    assert _run(["placement", "show", "--scheme", "rama_two", "-K", "9", "-r", "3",
                 "--rama-m", "6", "--json"]) == 0
    path = tmp_path / "p.json"
    path.write_text(capsys.readouterr().out)
    assert _run(["placement", "analyse", "--file", str(path), "-q", "2,3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["placement"]["num_files"] == 18
    assert [r["c_max"] for r in out["rows"]] == [2, 6]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--scheme", "mols", "-K", "16", "-r", "3"], "valid K for r=3: 12, 15, 21"),
        (["--scheme", "rama_one", "-K", "15", "-r", "5"], "r=5 is not < s"),
        (["--scheme", "rama_two", "-K", "25", "-r", "5", "--rama-m", "7"], "valid m: 5, 10"),
        (["--scheme", "mols", "-K", "15", "-r", "3", "--rama-m", "5"], "only for --scheme rama"),
        (["--scheme", "mols", "-K", "15"], "needs --replication"),
        (["--scheme", "mols", "-K", "15", "-r", "3", "-q", "0..16"], "q must be ≤ K = 15"),
        (["--scheme", "mols", "-K", "15", "-r", "3", "-q", "a..b"], "cannot read 'a..b'"),
        (["--scheme", "molz", "-K", "15", "-r", "3"], "did you mean 'mols'"),
        (["-K", "15", "-r", "3"], "give --scheme"),
        (["--file", "/nonexistent.json"], "not found"),
    ],
)
def test_clear_errors(argv, needle):
    with pytest.raises(ValueError) as info:
        _run(["placement", "analyse", *argv])
    assert needle in str(info.value)


def test_parse_adversaries():
    assert command.parse_adversaries("0..3,7") == [0, 1, 2, 3, 7]
    assert command.parse_adversaries("5") == [5]
    with pytest.raises(ValueError):
        command.parse_adversaries("3..1")


def test_cli_main_prints_one_line_error(capsys):
    cli = pytest.importorskip("shieldwall.cli")
    rc = cli.main(["placement", "analyse", "--scheme", "mols", "-K", "16", "-r", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "mols needs K = r·l" in err[0]
    rc = cli.main(["placement", "analyse", "--scheme", "mols", "-K", "15", "-r", "3",
                   "--time-limit", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["shieldwall: error: --time-limit must be > 0 seconds, got -1.0"]


def test_byzshield_names():
    assert names.approach_to_placement("draco-lite") == ("detox", False)
    assert names.approach_to_placement("draco_lite_attack") == ("detox", True)
    assert names.approach_to_placement("rama_two") == ("rama_two", False)
    assert names.mode_to_aggregator("multi-krum") == "multikrum"
    assert names.mode_to_aggregator("coord-median") == "median"
    assert names.err_mode_to_attack("rev_grad") == "reversed_gradient"
    with pytest.raises(ValueError, match="did you mean 'mols'"):
        names.approach_to_placement("mol")
    setup = names.from_byzshield(25, {"approach": "rama_two", "group-size": 5, "rama-m": 10,
                                      "worker-fail": 3, "mode": "bulyan", "err-mode": "constant",
                                      "byzantine-gen": "hard_coded"})
    assert (setup.placement, setup.replication) == ("rama_two", 5)
    assert setup.placement_params == {"m": 10} and setup.num_adversaries == 3
    assert (setup.attack, setup.aggregator, setup.adversaries) == ("constant", "bulyan",
                                                                   "worst_case")
    alie = names.from_byzshield(15, {"approach": "draco_lite_attack", "group_size": 3,
                                     "lis_simulation": "simulate", "worker_fail": 5})
    assert (alie.attack, alie.adversaries, alie.placement) == ("alie", "detox_worst", "detox")
    vote = names.from_byzshield(15, {"approach": "maj_vote", "group-size": 3})
    assert vote.aggregator == "mean" and vote.replication == 3
    with pytest.raises(ValueError, match="unknown ByzShield option"):
        names.from_byzshield(15, {"aproach": "mols"})
    with pytest.raises(ValueError, match="--err-mode"):
        names.from_byzshield(15, {"err-mode": "flip"})
