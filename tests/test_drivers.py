"""Drivers: one registry picks what runs a config; drivers sit above shieldwall.rundir and never
import the entry point back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shieldwall.config import ConfigError, config_from_dict
from shieldwall.drivers import DRIVERS, select_driver
from shieldwall.train import train

PACKAGE = Path(__file__).resolve().parents[1] / "shieldwall"


def cfg_with(**sections):
    return config_from_dict(sections)


@pytest.mark.parametrize(("sections", "driver"), [
    ({}, "rounds"),
    ({"train_args": {"federated_optimizer": "PS-SGD"}}, "rounds"),
    ({"train_args": {"federated_optimizer": "BTARD"}}, "btard"),
    ({"redundancy_args": {"enable": True}}, "redundancy"),
])
def test_the_driver_that_claims_the_config_runs_it(sections, driver):
    assert select_driver(cfg_with(**sections)).name == driver


def test_a_config_claimed_twice_is_one_error():
    with pytest.raises(ConfigError, match="btard .*BTARD.* and redundancy .*redundancy_args"):
        select_driver(cfg_with(train_args={"federated_optimizer": "BTARD"},
                               redundancy_args={"enable": True}))


def test_a_new_driver_is_one_registered_function(monkeypatch, tmp_path):
    monkeypatch.setattr(DRIVERS, "_entries", dict(DRIVERS._entries))
    monkeypatch.setattr(DRIVERS, "_lookup", dict(DRIVERS._lookup))
    seen = []

    @DRIVERS.register("swarm_test", claims=lambda cfg: cfg.name == "swarm-test",
                      claim="a config named swarm-test")
    def swarm(cfg, *, resume=None):
        seen.append((cfg.name, resume))
        return {"run_dir": str(tmp_path), "final_test_accuracy": 1.0}

    cfg = config_from_dict({}, name="swarm-test")
    assert train(cfg)["final_test_accuracy"] == 1.0
    assert seen == [("swarm-test", None)]
    assert select_driver(config_from_dict({})).name == "rounds"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("folder", ["drivers", "rundir", "btard", "redundancy", "algorithms",
                                    "fault_tolerance"])
def test_no_driver_imports_the_entry_point(folder):
    launchers = {PACKAGE / "btard" / "launch.py"}  # an entry point itself (``main``: N peers)
    for path in sorted(set((PACKAGE / folder).rglob("*.py")) - launchers):
        entry_points = {m for m in _imports(path)
                        if m in ("shieldwall.train", "shieldwall.cli")
                        or m.startswith("shieldwall.commands")}
        assert not entry_points, f"{path.relative_to(PACKAGE)} imports {entry_points}"


def test_run_plumbing_sits_below_every_driver():
    for path in sorted((PACKAGE / "rundir").rglob("*.py")):
        above = {m for m in _imports(path) if m.startswith(
            ("shieldwall.drivers", "shieldwall.btard", "shieldwall.redundancy",
             "shieldwall.runtime", "shieldwall.algorithms.server"))}
        assert not above, f"{path.relative_to(PACKAGE)} imports {above}"


def test_check_reports_a_config_claimed_twice(capsys, tmp_path):
    from shieldwall.cli import main

    path = tmp_path / "both.yaml"
    path.write_text("train_args: {federated_optimizer: BTARD}\nredundancy_args: {enable: true}\n")
    assert main(["check", str(path)]) == 2
    assert "more than one driver" in capsys.readouterr().err
