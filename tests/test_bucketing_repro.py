"""Pieces of the bucketing-paper reproduction: its split, its attack variants, worker momentum,
CClip from the previous aggregate, and the matrix's extra axes (all small and fast)."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shieldwall.algorithms.adversary import build_adversary
from shieldwall.algorithms.defense import build_defense
from shieldwall.attacks import ATTACKS
from shieldwall.attacks.alie import alie_z
from shieldwall.attacks.base import AttackContext
from shieldwall.config import config_from_dict
from shieldwall.data.partition import partition_indices
from shieldwall.matrix import Cell, cell_config, grid_cells, run_cells, summarize, write_csv


def _paper_noniid(labels: list[int], h: int, rank: int) -> list[int]:
    """Transcription of the paper's NONIIDLTSampler(alpha=False, beta=1) index list, unshuffled."""
    indices = []
    for c in range(max(labels) + 1):
        indices += [i for i, y in enumerate(labels) if y == c]
    size = math.ceil(len(indices) / h)
    indices += indices[: size * h - len(indices)]
    return indices[rank * size:(rank + 1) * size]


def test_sorted_partition_matches_the_papers_sampler_on_a_small_label_set():
    labels = [2, 0, 1, 0, 2, 1, 1, 0, 2, 2, 0]  # 11 samples, 3 classes
    parts = partition_indices(torch.tensor(labels), 5, "sorted", byzantine={1, 4}, seed=0)
    honest = [0, 2, 3]
    # Hand-checked: sorted order 1,3,7,10 | 2,5,6 | 0,4,8,9, padded by its first sample to 12.
    assert [parts[c].tolist() for c in honest] == [[1, 3, 7, 10], [2, 5, 6, 0], [4, 8, 9, 1]]
    for rank, c in enumerate(honest):
        assert sorted(parts[c].tolist()) == sorted(_paper_noniid(labels, 3, rank))
    # Byzantine clients: i.i.d. strided slices (ranks 0 and 1 of 3) of one permutation.
    byz = [parts[1].tolist(), parts[4].tolist()]
    assert [len(b) for b in byz] == [4, 4]
    assert set(byz[0]).isdisjoint(byz[1]) and set(byz[0] + byz[1]) <= set(range(11))
    # Without Byzantine ids every client gets a sorted shard; the union covers everything.
    parts = partition_indices(torch.tensor(labels), 3, "label_sorted")
    assert [p.tolist() for p in parts] == [[1, 3, 7, 10], [2, 5, 6, 0], [4, 8, 9, 1]]
    assert set(torch.cat(parts).tolist()) == set(range(11))


def test_sorted_partition_gives_honest_workers_one_or_two_labels():
    labels = torch.arange(10).repeat_interleave(60)[torch.randperm(600)]
    parts = partition_indices(labels, 25, "sorted", byzantine=set(range(20, 25)), seed=1)
    for c in range(20):
        assert len(parts[c]) == 30 and len(set(labels[parts[c]].tolist())) <= 2
    for c in range(20, 25):
        assert len(set(labels[parts[c]].tolist())) >= 5  # i.i.d. slices see most labels
    with pytest.raises(ValueError, match="not in"):
        partition_indices(labels, 25, "sorted", byzantine={25})


def _ctx(n=5, f=2):
    return AttackContext(n=n, f=f, generator=torch.Generator().manual_seed(0), num_classes=10)


HONEST = torch.tensor([[0.0, 0.0], [2.0, 4.0], [4.0, 2.0]])  # mean [2, 2], std [2, 2]


def test_alie_honest_z_rule_and_formula():
    assert alie_z(25, 5, "honest") == pytest.approx(0.2533471, abs=1e-6)  # Φ⁻¹(0.6)
    assert alie_z(25, 5) == pytest.approx(0.4676988, abs=1e-6)  # Φ⁻¹(0.68)
    z = alie_z(5, 1, "honest")  # s = 2, Φ⁻¹((5 - 1 - 2) / 4) = Φ⁻¹(0.5) = 0
    assert z == pytest.approx(0.0, abs=1e-12)
    out = ATTACKS.get("alie")(HONEST, 2, _ctx(25, 5), z_rule="honest")
    expected = torch.tensor([2.0, 2.0]) - 0.2533471 * 2.0
    assert torch.allclose(out, expected.expand(2, 2), atol=1e-5)
    with pytest.raises(ValueError, match="z_rule"):
        ATTACKS.get("alie")(HONEST, 1, _ctx(), z_rule="other")


def test_ipm_bit_flip_and_label_flip_formulas():
    assert torch.allclose(ATTACKS.get("ipm")(HONEST, 2, _ctx(), epsilon=0.1),
                          torch.tensor([[-0.2, -0.2]] * 2))
    assert torch.equal(ATTACKS.get("sign_flip")(HONEST, 2, _ctx()), -HONEST[:2])
    _, y = ATTACKS.get("label_flip")(torch.zeros(3, 1), torch.tensor([0, 3, 9]), _ctx())
    assert y.tolist() == [9, 6, 0]


def _cfg(tmp_path, **attack):
    raw = {
        "data_args": {"dataset": "digits"},
        "train_args": {"federated_optimizer": "PS-SGD", "client_num_in_total": 5,
                       "comm_round": 1, "worker_momentum": 0.9},
        "attack_args": {"enable_attack": True, "byzantine_client_num": 2, **attack},
        "defense_args": {"enable_defense": True, "defense_type": "centered_clip",
                         "init": "previous", "tau": 10.0, "iterations": 3},
        "tracking_args": {"log_file_dir": str(tmp_path)},
    }
    return config_from_dict(raw)


def test_honest_knowledge_hides_the_attackers_own_rows(tmp_path):
    cfg = _cfg(tmp_path, attack_type="ipm", knowledge="honest", epsilon=1.0)
    adv = build_adversary(cfg, 10)
    byz = sorted(adv.byzantine_ids(0))
    updates = torch.arange(10.0).reshape(5, 2)
    honest = [i for i in range(5) if i not in byz]
    expected = -updates[honest].mean(0)
    adv.corrupt_updates(updates, tuple(range(5)), [True] * 5, 0, 2, None, None)
    assert torch.allclose(updates[byz], expected.expand(2, 2))
    with pytest.raises(ValueError):
        config_from_dict({"attack_args": {"knowledge": "everyone"}})


def test_worker_momentum_rows_and_cclip_carry(tmp_path):
    from shieldwall.algorithms.ps_sgd import PSSGD

    cfg = _cfg(tmp_path, attack_type="ipm")
    alg = PSSGD(cfg.train_args, torch.nn.Linear(1, 1, bias=False), torch.device("cpu"))
    g1 = torch.tensor([[1.0], [2.0], [3.0]])
    out = alg.worker_momentum_rows(g1.clone(), (0, 1, 2), [True, True, False])
    assert out.tolist() == [[1.0], [2.0], [3.0]]  # first m = g
    g2 = torch.tensor([[10.0], [20.0], [30.0]])
    out = alg.worker_momentum_rows(g2.clone(), (0, 1, 2), [True, True, False])
    assert torch.allclose(out, torch.tensor([[10.9], [21.8], [30.0]]))  # Byzantine row raw
    state = alg.state_dict()
    alg2 = PSSGD(cfg.train_args, torch.nn.Linear(1, 1, bias=False), torch.device("cpu"))
    alg2.load_state_dict(state)
    assert torch.allclose(alg2.worker_momentum_rows(torch.zeros(1, 1), (1,), [True]),
                          torch.tensor([[0.9 * 21.8]]))
    defense = build_defense(cfg)
    assert defense.carry == {"init": "previous_aggregate"} and "init" not in defense.params
    with pytest.raises(ValueError, match="worker_momentum"):
        config_from_dict({"train_args": {"worker_momentum": 1.0}})


def test_matrix_axes_names_configs_and_summary(tmp_path):
    cells = grid_cells(["none", "ipm"], ["median"], [0, 1],
                       {"train_args.worker_momentum": [0, 0.9]})
    assert len(cells) == 8 and len({c.name for c in cells}) == 8
    assert cells[0].name == "none__median__worker_momentum=0__s0"
    base = config_from_dict({"attack_args": {"byzantine_client_num": 1},
                             "train_args": {"federated_optimizer": "PS-SGD"}})
    raw = cell_config(base, cells[-1], tmp_path)
    assert config_from_dict(raw).train_args.worker_momentum == 0.9
    with pytest.raises(ValueError, match="SECTION.KEY"):
        cell_config(base, Cell("none", "none", 0, (("nosuch", 1),)), tmp_path)
    accs = dict(zip(cells, np.linspace(0.1, 0.8, 8)))
    rows = summarize(accs, ["none", "ipm"], ["median"],
                     [(("train_args.worker_momentum", 0),), (("train_args.worker_momentum", 0.9),)])
    # β = 0, none: seeds 0 and 1 are cells 0 and 2 → 0.1 and 0.3.
    assert rows[0][1:3] == ("none", "median") and rows[0][3] == pytest.approx(0.2)
    assert rows[0][4] == pytest.approx(math.sqrt(0.02)) and rows[0][5] == 2
    path = write_csv(accs, ["none", "ipm"], ["median"], tmp_path / "m.csv")
    with path.open() as fh:
        got = list(csv.DictReader(fh))
    assert got[0]["worker_momentum" if "worker_momentum" in got[0] else
                  "train_args.worker_momentum"] == "0"
    assert len(got) == 4 and got[-1]["num_seeds"] == "2"


def test_run_cells_uses_the_given_executor_and_reports_each_cell(tmp_path):
    base = config_from_dict({"attack_args": {"byzantine_client_num": 1}})
    cells = grid_cells(["none"], ["median", "krum"], [0])
    seen = []

    from shieldwall.grid.executors import Executor

    class Fake(Executor):  # runs nothing: every cell "finishes" with accuracy 0.5
        name = "fake"

        def __init__(self):
            self.tasks = []

        def capacity(self, resources):
            return 1

        def submit(self, key, fn, payload, resources):
            assert payload.raw["tracking_args"]["run_name"] == key
            self.tasks.append(key)

        def as_completed(self):
            while self.tasks:
                yield self.tasks.pop(0), {"summary": {"final_test_accuracy": 0.5}, "seconds": 0.0}

    out = run_cells(base, cells, tmp_path, executor=Fake(),
                    on_result=lambda r: seen.append(len(r)))
    assert out == {c: 0.5 for c in cells} and seen == [0, 1, 2]


def test_mimic_paper_warmup_keeps_its_first_target():
    x = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 1.0]])
    # One power-iteration step from z0 = randn(2) (seed 0) on the centred rows.
    z0 = torch.randn(2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = x.double() - x.double().mean(0)
    z = (c @ z0) @ c
    expected = int(torch.argmax(x.double() @ (z / z.norm())))
    ctx = AttackContext(n=5, f=2, state={})
    mimic = ATTACKS.get("mimic")
    assert torch.equal(mimic(x, 2, ctx, warmup=1), x[expected].expand(2, 2))
    later = torch.tensor([[9.0, 9.0], [0.0, 0.0], [1.0, 1.0]])
    assert torch.equal(mimic(later, 2, ctx, warmup=1), later[expected].expand(2, 2))
    assert ctx.state["mimic"]["t"] == 2
    with pytest.raises(ValueError, match="ctx.state"):
        mimic(x, 1, AttackContext(n=5, f=2), warmup=1)


def test_worker_momentum_is_a_ps_sgd_setting():
    with pytest.raises(ValueError, match="PS-SGD only"):
        config_from_dict({"train_args": {"federated_optimizer": "FedAvg", "worker_momentum": 0.9}})
    cfg = config_from_dict(
        {"train_args": {"federated_optimizer": "ps_sgd", "worker_momentum": 0.5}}
    )
    assert cfg.train_args.worker_momentum == 0.5


def test_axis_flag_parsing():
    from shieldwall.commands.matrix import parse_axes

    axes = parse_axes(["train_args.worker_momentum=0,0.9", "defense_args.tau=1, 2.5"])
    assert axes == {"train_args.worker_momentum": [0, 0.9], "defense_args.tau": [1, 2.5]}
    for bad in ("momentum=0,1", "train_args.momentum", "train_args.momentum="):
        with pytest.raises(ValueError, match="SECTION.KEY"):
            parse_axes([bad])
    with pytest.raises(ValueError, match="twice"):
        parse_axes(["a.b=1", "a.b=2"])


def test_an_interrupted_cell_continues_from_its_checkpoint(tmp_path):
    from shieldwall.matrix import _run_cell

    raw_base = {
        "data_args": {"dataset": "digits", "partition_method": "sorted"},
        "train_args": {"federated_optimizer": "PS-SGD", "client_num_in_total": 6,
                       "comm_round": 2, "batch_size": 8, "learning_rate": 0.1,
                       "checkpoint_frequency": 2},
        "validation_args": {"frequency_of_the_test": 2},
        "device_args": {"num_threads": 1},
        "tracking_args": {"enable_tensorboard": False},
        "attack_args": {"byzantine_client_num": 1},
    }
    cell = Cell("ipm(knowledge=honest)", "bucketing(s=2)+centered_clip(init=previous)", 0,
                (("train_args.worker_momentum", 0.9),))
    first = cell_config(config_from_dict(raw_base), cell, tmp_path)
    _run_cell(first)
    run_dir = tmp_path / "cells" / cell.name
    (run_dir / "summary.json").unlink()  # as if stopped after its round-1 checkpoint
    raw_base["train_args"]["comm_round"] = 4
    summary = _run_cell(cell_config(config_from_dict(raw_base), cell, tmp_path))
    rounds = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    assert summary["rounds"] == 4 and len(rounds) == 4  # rounds 0-1, then 2-3 resumed
    assert 0.0 <= summary["final_test_accuracy"] <= 1.0


# Transcriptions of the paper's rules (codes/aggregator/{clipping,rfa,krum}.py), list-of-rows API.
def _paper_cclip(rows, tau, n_iter, momentum):
    def clip(v):
        return v * min(1.0, tau / float(v.norm()))

    for _ in range(n_iter):
        momentum = sum(clip(v - momentum) for v in rows) / len(rows) + momentum
    return momentum


def _paper_rfa(rows, z, nu, T):
    for _ in range(T):
        betas = [(1 / len(rows)) / max(float((z - w).norm()), nu) for w in rows]
        z = sum(w * b for w, b in zip(rows, betas)) / sum(betas)
    return z


def _paper_krum(rows, f):
    n = len(rows)
    scores = []
    for i in range(n):
        d = sorted(float((rows[i] - rows[j]).norm()) ** 4 for j in range(n) if j != i)
        scores.append(sum(d[: n - f - 2]))  # the paper squares the squared distances
    return rows[min(range(n), key=scores.__getitem__)]


def test_rules_match_the_papers_code_on_random_rows():
    from shieldwall.aggregators import AGGREGATORS

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(13, 40, generator=gen, dtype=torch.float64) * 3
    x[:5] += 8.0  # a far cluster, so clipping and the distances matter
    prev = torch.randn(40, generator=gen, dtype=torch.float64)
    rows = list(x)
    ours = AGGREGATORS.get("centered_clip")(x, 5, tau=10.0, iterations=3, init=prev)
    assert torch.allclose(ours, _paper_cclip(rows, 10.0, 3, prev), atol=1e-10)
    start = x.median(dim=0).values
    ours = AGGREGATORS.get("geometric_median")(x, 5, nu=0.1, max_iter=8, tol=0.0, init=start)
    assert torch.allclose(ours, _paper_rfa(rows, start, 0.1, 8), atol=1e-10)
    zeros = torch.zeros(40, dtype=torch.float64)  # the paper's start, every call
    ours = AGGREGATORS.get("geometric_median")(x, 5, nu=0.1, max_iter=8, tol=0.0, init="zeros")
    assert torch.allclose(ours, _paper_rfa(rows, zeros, 0.1, 8), atol=1e-10)
    krum = AGGREGATORS.get("krum")
    assert torch.equal(krum(x, 5, power=2), _paper_krum(rows, 5))
    # Blanchard's score (power 1) picks another row here: the paper's code squares twice.
    assert not torch.equal(krum(x, 5), _paper_krum(rows, 5))


def _experiment(name: str):
    """A module of ``experiments/`` (the bucketing scripts import each other by name)."""
    import importlib

    folder = str(Path(__file__).resolve().parents[1] / "experiments")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def test_reproduction_grid_cells_and_cclip_radius():
    grid = _experiment("bucketing_grid")
    cells = grid.ordered_cells()
    assert len(cells) == len(set(cells)) == 286
    for c in cells:  # every cell's labels give the cell back (the CSV round trip)
        atk, agg, s, beta = grid.labels(c)
        assert grid.cell(atk, agg, s, beta, c.seed) == c
    # the exp3 logs ran CClip with tau = 10 / (1 - beta) (the code's default then)
    assert grid.defense("cp", 0, 0.9) == "centered_clip(tau=100,iterations=3,init=previous)"
    assert grid.defense("cp", 2, 0.0) == \
        "bucketing(s=2)+centered_clip(tau=10,iterations=3,init=previous)"


def test_reproduction_script_lists_the_grid_in_run_order():
    import subprocess

    script = Path(__file__).resolve().parents[1] / "experiments" / "reproduce_bucketing.py"
    out = subprocess.run([sys.executable, str(script), "--list"], capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    grid = _experiment("bucketing_grid")
    assert [line.split()[2] for line in out] == [c.name for c in grid.ordered_cells()]
    assert {line.split()[1] for line in out} <= {"done", "todo"}


def test_late_means_and_curves_round_trip(tmp_path, monkeypatch):
    grid = _experiment("bucketing_grid")
    rep = _experiment("bucketing_report")
    late = {step: 10.0 * i for i, step in enumerate(rep.LATE)}  # 0, 10, 20, 30, 40: mean 20
    curves = {
        ("IPM", "cm", 2, 0.9, 0): {30: 90.0, **late},
        ("IPM", "cm", 2, 0.9, 1): {step: 50.0 for step in rep.LATE},
        ("IPM", "cm", 2, 0.9, 2): {600: 99.0},  # evaluations missing: left out
    }
    assert rep.late_means(curves) == {("IPM", "cm", 2, 0.9): [20.0, 50.0]}
    # the whole-run column: every evaluation 30..600 must be present
    full = {step: 1.0 * step for step in rep.EVAL_STEPS}
    assert rep.late_means({**curves, ("BF", "cm", 0, 0.0, 0): full}, rep.EVAL_STEPS) == {
        ("BF", "cm", 0, 0.0): [315.0]}
    assert rep._delta([40.0, 50.0], [50.0]) == "-5.0" and rep._delta([], [1.0]) == ""
    # a finished cell's metrics.jsonl reaches the committed curves CSV; rows there are kept
    monkeypatch.setattr(rep, "CURVES", tmp_path / "curves.csv")
    c = grid.cell("IPM", "cm", 2, 0.9, 0)
    run = tmp_path / "out" / "cells" / c.name
    run.mkdir(parents=True)
    run.joinpath("metrics.jsonl").write_text(
        '{"round": 0, "train_loss": 2.3}\n{"round": 29, "test_accuracy": 0.5}\n'
        '{"round": 599, "test_accuracy": 0.975}\n'
    )
    assert rep.update_curves([c], tmp_path / "out") == {("IPM", "cm", 2, 0.9, 0): {30: 50.0,
                                                                                  600: 97.5}}
    other = grid.cell("BF", "rfa", 0, 0.0, 1)  # no run directory here: its rows stay as they are
    rep.update_curves([other], tmp_path / "out")
    assert rep.read_curves(rep.CURVES) == {("IPM", "cm", 2, 0.9, 0): {30: 50.0, 600: 97.5}}


def test_a_diverged_cell_repeats_its_last_accuracy_and_is_marked(tmp_path, monkeypatch):
    grid = _experiment("bucketing_grid")
    rep = _experiment("bucketing_report")
    monkeypatch.setattr(rep, "CURVES", tmp_path / "curves.csv")
    monkeypatch.setattr(rep, "DIVERGED", tmp_path / "diverged.csv")
    c = grid.cell("BF", "krum", 2, 0.0, 0)
    run = tmp_path / "out" / "cells" / c.name
    run.mkdir(parents=True)
    # evaluated after 30 and 60 steps, then round 60's updates were all non-finite: the loop
    # evaluated the model after 60 steps once more and stopped
    run.joinpath("metrics.jsonl").write_text(
        '{"round": 29, "test_accuracy": 0.5}\n{"round": 59, "test_accuracy": 0.099}\n'
        '{"round": 60, "diverged": "round 60: the model has diverged", "test_accuracy": 0.098}\n'
    )
    curve, step = rep.cell_curve(run)
    assert step == 60
    assert curve == {30: 50.0, 60: 9.9, **{s: 9.8 for s in range(90, 601, 30)}}
    rep.update_curves([c], tmp_path / "out")
    assert rep.read_diverged() == {("BF", "krum", 2, 0.0, 0): 60}
    assert rep.late_means(rep.read_curves(rep.CURVES)) == {("BF", "krum", 2, 0.0): [9.8]}


def test_exp3_figure_draws_any_subset_of_runs(tmp_path):
    figures = _experiment("bucketing_figures")
    curves = {("IPM", "cm", 2, 0.9, seed): {30: 40.0 + seed, 600: 60.0} for seed in range(3)}
    curves[("ALIE", "rfa", 0, 0.0, 0)] = {30: 80.0}  # one seed, one evaluation; other panels empty
    path = figures.plot_curves(curves, tmp_path / "exp3.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mimic_targets_script_pins_the_papers_targets(tmp_path, monkeypatch):
    import argparse
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[1] / "experiments" / "bucketing_mimic_targets.py"
    spec = importlib.util.spec_from_file_location("bucketing_mimic_targets", path)
    mt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mt)
    grid = _experiment("bucketing_grid")
    for agg, s in (("krum", 2), ("krum", 0), ("rfa", 0)):  # the grid's cell, the paper's target
        ours = grid.cell("mimic", agg, s, 0.9, 1)
        pinned = mt.pinned_cell(agg, s, 1)
        assert (pinned.defense, pinned.seed, pinned.axes) == (ours.defense, 1, ours.axes)
        assert pinned.attack == "mimic(target=17,knowledge=honest)"
    assert [mt.pinned_cell("krum", 2, k).attack.split(",")[0] for k in (0, 2)] == \
        ["mimic(target=14", "mimic(target=1"]
    assert mt.parse_cell("krum:none:2") == ("krum", 0, 2, 0.9)
    assert mt.parse_cell("rfa:2:0") == ("rfa", 2, 0, 0.9)
    assert mt.parse_cell("cm:none:1:0") == ("cm", 0, 1, 0.0)
    at_0 = mt.pinned_cell("cm", 0, 1, 0.0)
    assert (at_0.defense, at_0.axes) == ("median", ((grid.MOMENTUM, 0.0),))
    for bad in ("krum:3:1", "krum:2:5", "x", "krum:2:", "avg:2:0", "2:0", "cm:none:1:0.5",
                "cm:none:1:0:7"):
        with pytest.raises(argparse.ArgumentTypeError, match="AGG:S:SEED"):
            mt.parse_cell(bad)
    run = tmp_path / "cells" / mt.pinned_cell("krum", 2, 1).name  # one finished, one not
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("\n".join(
        json.dumps({"round": r - 1, "test_accuracy": r / 1000}) for r in (30, 60)))
    (run / "summary.json").write_text("{}")
    (tmp_path / "cells" / mt.pinned_cell("rfa", 0, 0).name).mkdir()
    monkeypatch.setattr(mt, "OUT", tmp_path / "targets.csv")
    assert mt.write_curves(tmp_path) == 1
    with (tmp_path / "targets.csv").open() as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    assert [(r["aggregator"], r["s"], r["seed"], r["target"], r["iterations"], r["accuracy"])
            for r in rows] == [("krum", "2", "1", "17", "30", "3.00"),
                               ("krum", "2", "1", "17", "60", "6.00")]
    # a cell finished in another checkout (rows in the CSV, no run directory here) is kept
    with (tmp_path / "targets.csv").open("a") as fh:
        fh.write("mimic,cm,0,0.0,1,17,600,50.14\n")
    (run / "summary.json").unlink()  # and a cell whose directory is gone keeps its rows too
    assert mt.write_curves(tmp_path) == 2
    with (tmp_path / "targets.csv").open() as fh:
        kept = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    assert kept == rows + [{"attack": "mimic", "aggregator": "cm", "s": "0", "beta": "0.0",
                            "seed": "1", "target": "17", "iterations": "600",
                            "accuracy": "50.14"}]


def test_agreement_counts_cells_by_gap_and_lists_the_far_ones():
    rep = _experiment("bucketing_report")
    paper = {("IPM", "cm", 2, 0.9): [60.0, 62.0, 64.0], ("BF", "krum", 0, 0.9): [10.0, 50.0],
             ("LF", "cp", 0, 0.0): [90.0], ("ALIE", "rfa", 0, 0.9): [11.0]}
    ours = {("IPM", "cm", 2, 0.9): [65.0], ("BF", "krum", 0, 0.9): [9.5, 10.5],
            ("LF", "cp", 0, 0.0): [89.0]}  # no run of the ALIE cell: not counted
    lines = rep.agreement_lines([("final", paper, ours)])
    # β = 0.9: gaps 3 (IPM) and 20 (BF); β = 0: gap 1 (LF); the counts are cumulative
    assert "| 0.9 | final | 2 | 0 | 1 | 1 | 1 |" in lines
    assert "| 0.0 | final | 1 | 1 | 1 | 1 | 0 |" in lines
    assert lines[-1].endswith("β = 0.9, s = none, krum, BF (-20.0; paper's seeds 10–50, ours "
                              "10).")


def test_papers_draws_script_takes_the_papers_batches(monkeypatch):
    """Honest worker r's batch at step t is batch t mod 30 of randperm seeded r³ + t // 30 (+K),
    the paper's NONIIDLTSampler; Byzantine workers keep PS-SGD's own draw."""
    from shieldwall.algorithms.base import ClientTask
    from shieldwall.algorithms.ps_sgd import PSSGD
    from shieldwall.attacks.schedule import byzantine_ids
    from shieldwall.config.schema import TrainArgs
    from shieldwall.runtime.batched import unbatchable_reason

    bdo = _experiment("bucketing_papers_draws")

    def perm(seed):
        return torch.randperm(3000, generator=torch.Generator().manual_seed(seed))

    assert bdo.paper_batch(0, 0, 3000, 32, 0).tolist() == perm(0)[:32].tolist()
    assert bdo.paper_batch(2, 29, 3000, 32, 0).tolist() == perm(8)[928:960].tolist()
    assert bdo.paper_batch(2, 30, 3000, 32, 0).tolist() == perm(9)[:32].tolist()  # next epoch
    assert bdo.paper_batch(3, 65, 3000, 32, 100).tolist() == perm(27 + 2 + 100)[160:192].tolist()
    with pytest.raises(ValueError, match="no batch 29"):
        bdo.paper_batch(0, 29, 900, 32, 0)

    alg = PSSGD(TrainArgs(batch_size=32), torch.nn.Linear(2, 2), torch.device("cpu"))
    gen = torch.Generator().manual_seed(5)
    assert alg.batch_indices(3000, 32, ClientTask(0, 0, 0), gen).tolist() == \
        torch.randperm(3000, generator=torch.Generator().manual_seed(5))[:32].tolist()
    assert "batch_indices" not in (unbatchable_reason(alg) or "")
    monkeypatch.setattr(PSSGD, "batch_indices", PSSGD.batch_indices)  # undone after the test
    bdo.install_batches(7)
    assert "overrides batch_indices" in unbatchable_reason(alg)
    byz = byzantine_ids(25, 5, 0, seed=3, redraw=False)
    honest = [c for c in range(25) if c not in byz]
    got = alg.batch_indices(3000, 32, ClientTask(31, honest[4], 3), gen)
    assert got.tolist() == perm(64 + 1 + 7)[32:64].tolist()  # rank 4, epoch 1, batch 1
    own = alg.batch_indices(3000, 32, ClientTask(31, byz[0], 3), torch.Generator().manual_seed(5))
    assert own.tolist() == torch.randperm(3000, generator=torch.Generator().manual_seed(5))[
        :32].tolist()


def test_papers_draws_script_builds_the_papers_initial_model(monkeypatch):
    """--init paper: the paper's Net layers built right after torch.manual_seed(seed), copied
    into bucketing_cnn by the rounds driver; the global RNG is left alone."""
    from shieldwall.drivers import rounds
    from shieldwall.models import build_model
    from shieldwall.seeding import derive_seed

    bdo = _experiment("bucketing_papers_draws")
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, 32, 3, 1)
    weights = bdo.paper_init(1)
    assert [tuple(w.shape) for w in weights] == [(32, 1, 3, 3), (32,), (64, 32, 3, 3), (64,),
                                                 (128, 9216), (128,), (10, 128), (10,)]
    assert torch.equal(weights[0], conv.weight) and torch.equal(weights[1], conv.bias)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    bdo.paper_init(2)
    assert torch.equal(torch.rand(3), expected)
    assert bdo.run_seed(derive_seed(2, "init")) == 2
    with pytest.raises(ValueError, match="no run seed below 10"):
        bdo.run_seed(12345, limit=10)

    monkeypatch.setattr(rounds, "build_model", build_model)  # undone after the test
    bdo.install_init()
    torch.manual_seed(derive_seed(1, "init"))  # as the rounds driver seeds before building
    model = rounds.build_model("bucketing_cnn", (1, 28, 28), 10)
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))
    torch.manual_seed(derive_seed(1, "init"))
    with pytest.raises(ValueError, match="paper's Net shapes"):
        rounds.build_model("lenet", (1, 28, 28), 10)


def test_papers_draws_results_gather_every_combination(tmp_path, monkeypatch):
    import json

    bdo = _experiment("bucketing_papers_draws")
    monkeypatch.setattr(bdo, "OUT", tmp_path / "draws.csv")
    for combo, cell, acc in (("paper+0-ours-ours", ("cm", 0, 1, 0.0), 0.5),
                             ("ours-paper-ours", ("cm", 0, 1, 0.0), 0.625),
                             ("ours-ours-paper", ("cm", 0, 1, 0.0), 0.75),
                             ("paper+0-paper-paper", ("cm", 0, 0, 0.0, 7), 0.25),
                             ("stray", ("cm", 0, 0, 0.0), 0.1)):  # not a combination: skipped
        run = tmp_path / "runs" / combo / "cells" / bdo.pinned_cell(*cell).name
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"round": 29, "test_accuracy": acc}))
        (run / "summary.json").write_text("{}")
    assert bdo.write_results(tmp_path / "runs") == 4
    with (tmp_path / "draws.csv").open("a") as fh:  # a row from another checkout is kept
        fh.write("mimic,cm,0,0.0,2,1,ours,paper,ours,30,70.00\n")
    assert bdo.write_results(tmp_path / "runs") == 5
    with (tmp_path / "draws.csv").open() as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    assert [(r["seed"], r["target"], r["batches"], r["init"], r["masks"], r["accuracy"])
            for r in rows] == [("1", "17", "ours", "ours", "paper", "75.00"),
                               ("1", "17", "ours", "paper", "ours", "62.50"),
                               ("2", "1", "ours", "paper", "ours", "70.00"),
                               ("1", "17", "paper+0", "ours", "ours", "50.00"),
                               ("0", "7", "paper+0", "paper", "paper", "25.00")]
    assert bdo.write_results(tmp_path / "absent") == 5


def test_papers_draws_script_draws_the_papers_cpu_masks(monkeypatch):
    """--masks paper: every client of a step draws from the RNG state the paper's epoch starts
    from: after torch.manual_seed(seed) and its Net, then one int64 draw per epoch."""
    from shieldwall.runtime import base as runtime_base

    bdo = _experiment("bucketing_papers_draws")
    states = bdo.paper_mask_states(3, epochs=3)
    torch.manual_seed(3)
    bdo.paper_init(0)  # builds under its own fork: draws nothing from this RNG
    assert not torch.equal(states[0], torch.get_rng_state())  # the Net is not drawn yet
    torch.manual_seed(3)
    [torch.nn.Conv2d(1, 32, 3, 1), torch.nn.Conv2d(32, 64, 3, 1), torch.nn.Linear(9216, 128),
     torch.nn.Linear(128, 10)]
    assert torch.equal(states[0], torch.get_rng_state())
    iter(torch.utils.data.DataLoader(list(range(4))))  # the paper's test loader, once an epoch
    assert torch.equal(states[1], torch.get_rng_state())

    monkeypatch.setattr(runtime_base, "shared_dropout_rng", runtime_base.shared_dropout_rng)
    bdo.install_masks()
    torch.manual_seed(99)
    expected = torch.rand(2)
    torch.manual_seed(99)
    for round, state in ((0, states[0]), (29, states[0]), (30, states[1]), (-1, states[0])):
        with runtime_base.shared_dropout_rng(3, round, 600):
            assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(2), expected)  # the global RNG is restored after each step


def test_extra_seeds_script_runs_grid_cells_at_other_seeds(tmp_path, monkeypatch):
    import argparse
    import json

    es = _experiment("bucketing_extra_seeds")
    grid = _experiment("bucketing_grid")
    assert es.parse_cell("mimic:cm:none:0") == ("mimic", "cm", 0, 0.0)
    assert es.parse_cell("IPM:krum:2:0.9") == ("IPM", "krum", 2, 0.9)
    for bad in ("mimic:cm:3:0", "x:cm:none:0", "mimic:avg:none:0", "mimic:cm:none:0.5",
                "mimic:cm:none"):
        with pytest.raises(argparse.ArgumentTypeError, match="ATTACK:AGG:S:BETA"):
            es.parse_cell(bad)
    run = tmp_path / "cells" / grid.cell("mimic", "cm", 0, 0.0, 3).name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"round": 599, "test_accuracy": 0.685}))
    (run / "summary.json").write_text("{}")
    monkeypatch.setattr(es, "OUT", tmp_path / "extra.csv")
    assert es.write_results(tmp_path, [("mimic", "cm", 0, 0.0)], [3, 4]) == 1  # seed 4 unrun
    with (tmp_path / "extra.csv").open("a") as fh:  # a row from another checkout is kept
        fh.write("mimic,cm,0,0.0,4,600,60.07\n")
    assert es.write_results(tmp_path, [("mimic", "cm", 0, 0.0)], [3]) == 2
    with (tmp_path / "extra.csv").open() as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    assert [(r["seed"], r["iterations"], r["accuracy"]) for r in rows] == [
        ("3", "600", "68.50"), ("4", "600", "60.07")]
