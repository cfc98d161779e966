"""The bucketing reproduction's report: our results beside the paper's exp3 logs.

:func:`report` (``experiments/reproduce_bucketing.py --report``) rewrites
``docs/bucketing/bucketing_table.md`` and the table between the markers of
``docs/reproductions.md``: per cell, the paper's mean ± std over its seeds (transcribed in
``experiments/results/bucketing_paper_exp3.csv``) and ours at step 600, over steps 480–600 and
over all twenty evaluations; how many cells agree within 2, 5 and 10 points; the cells still
running. It also draws one heatmap per (β, s) for each side and the paper's exp3 figure from
both sides' curves (:mod:`bucketing_figures`).
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bucketing_figures import plot_curves
from bucketing_grid import ATTACKS, BUCKETS, ROOT, labels, ordered_cells, write_csv

from shieldwall.matrix import Cell, plot_heatmap

#: every evaluation (each 30 steps) of our finished cells, in the paper's CSV layout
CURVES = ROOT / "experiments" / "results" / "bucketing_mnist_curves.csv"
#: the runs that diverged (every honest update non-finite or beyond the norm bound), and at which
#: step: they stop there, and their later evaluations repeat the diverged model's accuracy
DIVERGED = ROOT / "experiments" / "results" / "bucketing_mnist_diverged.csv"
PAPER = ROOT / "experiments" / "results" / "bucketing_paper_exp3.csv"
DOCS = ROOT / "docs" / "bucketing"
#: the evaluations averaged in the table's "late" columns: steps 480, 510, …, 600
LATE = tuple(range(480, 601, 30))
#: every evaluation of a run: each 30 steps to 600
EVAL_STEPS = tuple(range(30, 601, 30))


def read_paper(iterations: int = 600) -> dict[tuple[str, str, int, float], list[float]]:
    """The paper's accuracies (%) after ``iterations`` steps, per (attack, agg, s, β)."""
    out: dict[tuple[str, str, int, float], list[float]] = {}
    with PAPER.open() as fh:
        for row in csv.DictReader(line for line in fh if not line.startswith("#")):
            if int(row["iterations"]) == iterations:
                key = (row["attack"], row["aggregator"], int(row["s"]), float(row["beta"]))
                out.setdefault(key, []).append(float(row["accuracy"]))
    return out


Curve = dict[int, float]
"""Accuracy (%) by step of one run."""


def read_curves(
    path: Path, extra: Mapping[str, Callable[[str], Any]] | None = None
) -> dict[tuple, Curve]:
    """Every run's evaluations from a CSV in the paper's layout (``attack, aggregator, s, beta,
    seed, iterations, accuracy``; ``#`` lines are comments), keyed by (attack, agg, s, β, seed)
    and then by the ``extra`` columns (name → type), in their order."""
    out: dict[tuple, Curve] = {}
    if not path.is_file():
        return out
    extra = extra or {}
    with path.open() as fh:
        for row in csv.DictReader(line for line in fh if not line.startswith("#")):
            key = (row["attack"], row["aggregator"], int(row["s"]), float(row["beta"]),
                   int(row["seed"]), *(kind(row[name]) for name, kind in extra.items()))
            out.setdefault(key, {})[int(row["iterations"])] = float(row["accuracy"])
    return out


def cell_curve(run_dir: Path) -> tuple[Curve, int | None]:
    """A cell's evaluations (%) by step, from its ``metrics.jsonl``, and the step at which it
    diverged (``None``: it did not).

    A run whose model diverged stops at that round (see
    :class:`shieldwall.algorithms.base.ModelDivergedError`) with one last evaluation of the model
    as it stood; its remaining evaluations are filled with that accuracy, as the paper's code,
    which trains on with non-finite weights, scores a constant chance-level accuracy from there.
    """
    curve: Curve = {}
    diverged = None
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if "diverged" in entry:  # evaluated before its round: the model after `round` steps
                diverged = int(entry["round"])
                acc = 100 * float(entry["test_accuracy"])
                for step in EVAL_STEPS:
                    if step >= diverged:
                        curve.setdefault(step, acc)
            elif "test_accuracy" in entry:
                curve[int(entry["round"]) + 1] = 100 * float(entry["test_accuracy"])
    return curve, diverged


def read_diverged() -> dict[tuple[str, str, int, float, int], int]:
    """The diverged runs in :data:`DIVERGED`: (attack, agg, s, β, seed) → step."""
    out: dict[tuple[str, str, int, float, int], int] = {}
    if DIVERGED.is_file():
        with DIVERGED.open() as fh:
            for row in csv.DictReader(fh):
                out[(row["attack"], row["aggregator"], int(row["s"]), float(row["beta"]),
                     int(row["seed"]))] = int(row["step"])
    return out


def update_curves(cells: list[Cell], out: Path) -> dict[tuple[str, str, int, float, int], Curve]:
    """Add the finished ``cells``' curves found under ``out`` to :data:`CURVES` (rows already
    there are kept: a checkout without the run directories loses nothing)."""
    curves = read_curves(CURVES)
    diverged = read_diverged()
    for c in cells:
        curve, step = cell_curve(out / "cells" / c.name)
        if curve:
            curves[(*labels(c), c.seed)] = curve
        if step is not None:
            diverged[(*labels(c), c.seed)] = step
    if diverged:
        write_csv(DIVERGED, ["attack", "aggregator", "s", "beta", "seed", "step"],
                  ([*key, diverged[key]] for key in sorted(diverged)))
    write_csv(CURVES, CURVE_HEADER, curve_rows(curves),
              comment="Test top-1 (%) of every finished cell of "
              "experiments/reproduce_bucketing.py, each evaluation (every 30 steps); a run "
              "in bucketing_mnist_diverged.csv repeats its diverged model's accuracy after "
              "the step it diverged at")
    return curves


#: the columns of a curves CSV (ours, the paper's transcription)
CURVE_HEADER = ["attack", "aggregator", "s", "beta", "seed", "iterations", "accuracy"]


def curve_rows(curves: dict[tuple[str, str, int, float, int], Curve]) -> list[list[object]]:
    """:func:`read_curves`' inverse: one row per run and evaluation, sorted."""
    return [[*key, step, f"{curve[step]:.2f}"]
            for key, curve in sorted(curves.items()) for step in sorted(curve)]


def late_means(curves: dict[tuple[str, str, int, float, int], Curve],
               steps: tuple[int, ...] = LATE) -> dict[tuple[str, str, int, float], list[float]]:
    """Per (attack, agg, s, β): each seed's mean over the evaluations at ``steps`` (default
    :data:`LATE`; runs missing any of them are left out). Oscillating cells swing by tens of
    points between evaluations; the last five say more than the last one, and all twenty
    (:data:`EVAL_STEPS`, the area under the curve) compare whole runs."""
    out: dict[tuple[str, str, int, float], list[float]] = {}
    for (*key, _seed), curve in sorted(curves.items()):
        if all(step in curve for step in steps):
            out.setdefault(tuple(key), []).append(statistics.fmean(curve[s] for s in steps))
    return out


def _delta(ours: list[float], paper: list[float]) -> str:
    return f"{statistics.fmean(ours) - statistics.fmean(paper):+.1f}" if ours and paper else ""


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f} ({len(values)})"


def progress_lines(results: dict[Cell, float], out: Path | None = None) -> list[str]:
    """Unfinished cells: our latest test accuracy beside the paper's at the same iteration."""
    out = out or ROOT / "runs" / "bucketing_mnist"
    rows = []
    for c in ordered_cells():
        path = out / "cells" / c.name / "metrics.jsonl"
        if c in results or not path.is_file():
            continue
        last = None
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if "test_accuracy" in entry:
                last = entry
        if last is None:
            continue
        step = int(last["round"]) + 1
        key = labels(c)
        paper = read_paper(step).get(key, [])
        rows.append(f"| {key[3]} | {key[2] or 'none'} | {key[1]} | {key[0]} | {step} | "
                    f"{_fmt(paper)} | {100 * last['test_accuracy']:.1f} |")
    if not rows:
        return []
    return ["", "Cells still running (latest evaluation; the paper's value at the same step):", "",
            "| β | s | aggregator | attack | step | paper | shieldwall |",
            "|---|---|---|---|---|---|---|", *rows]


Means = dict[tuple[str, str, int, float], list[float]]
BINS = (2.0, 5.0, 10.0)


def agreement_lines(pairs: list[tuple[str, Means, Means]]) -> list[str]:
    """How far our means sit from the paper's, counted per β: for each measure (``name``, the
    paper's and our per-cell values), the cells with both, binned by ``|ours − paper|``; then the
    cells more than 10 points off at the end."""
    lines = ["", "Agreement with the paper, per cell that both have (|mean of ours − mean of the "
             "paper's| in points; counts are cumulative):", "",
             "| β | measure | cells | within 2 | within 5 | within 10 | more than 10 |",
             "|---|---|---|---|---|---|---|"]
    for beta in (0.9, 0.0):
        for name, paper, ours in pairs:
            gaps = [abs(statistics.fmean(ours[k]) - statistics.fmean(v))
                    for k, v in paper.items() if k[3] == beta and ours.get(k)]
            if not gaps:
                continue
            counts = [sum(g <= b for g in gaps) for b in BINS] + [sum(g > BINS[-1] for g in gaps)]
            cols = " | ".join(map(str, counts))
            lines.append(f"| {beta} | {name} | {len(gaps)} | {cols} |")
    _, paper, ours = pairs[0]
    far = sorted((k for k, v in paper.items() if ours.get(k)
                  and abs(statistics.fmean(ours[k]) - statistics.fmean(v)) > BINS[-1]),
                 key=lambda k: (-k[3], k[2] == 0, k[1], k[0]))
    if far:
        cells = [f"β = {b}, s = {s or 'none'}, {agg}, {atk} ({_delta(ours[k], paper[k])}; "
                 f"paper's seeds {_span(paper[k])}, ours {_span(ours[k])})"
                 for k in far for atk, agg, s, b in [k]]
        lines += ["", "More than 10 points off at the end (see the notes below the table): "
                  + "; ".join(cells) + "."]
    return lines


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.0f}" if round(low) == round(high) else f"{low:.0f}–{high:.0f}"


def report(results: dict[Cell, float], out: Path | None = None) -> Path:
    """The side-by-side table (Markdown) and heatmaps per (β, s): ours and the paper's."""
    DOCS.mkdir(parents=True, exist_ok=True)
    paper = read_paper()
    paper_curves = read_curves(PAPER)
    ours_curves = update_curves(list(results), out or ROOT / "runs" / "bucketing_mnist")
    paper_late, ours_late = late_means(paper_curves), late_means(ours_curves)
    paper_all = late_means(paper_curves, EVAL_STEPS)
    ours_all = late_means(ours_curves, EVAL_STEPS)
    diverged = read_diverged()
    ours: Means = {}
    for c, acc in results.items():
        ours.setdefault(labels(c), []).append(100 * acc)
    lines = [
        "| β | s | aggregator | attack | paper (exp3 logs) | shieldwall | Δ "
        "| paper, steps 480–600 | shieldwall, steps 480–600 | Δ "
        "| paper, all 20 evaluations | shieldwall, all 20 | Δ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for beta in (0.9, 0.0):
        for s in BUCKETS:
            for agg in ["avg", "cm", "cp", "krum", "rfa", "tm"]:
                for atk in ATTACKS:
                    key = (atk, agg, s, beta)
                    p, o = paper.get(key, []), ours.get(key, [])
                    if not p and not o:
                        continue
                    pl, ol = paper_late.get(key, []), ours_late.get(key, [])
                    pa, oa = paper_all.get(key, []), ours_all.get(key, [])
                    mark = " †" if any(k[:4] == key for k in diverged) else ""
                    lines.append(f"| {beta} | {s or 'none'} | {agg} | {atk} | {_fmt(p)} | "
                                 f"{_fmt(o)}{mark} | {_delta(o, p)} | {_fmt(pl)} | "
                                 f"{_fmt(ol)} | {_delta(ol, pl)} | {_fmt(pa)} | {_fmt(oa)} | "
                                 f"{_delta(oa, pa)} |")
    if diverged:
        lines += ["", "† diverged (every honest update non-finite or above the norm bound; the "
                  "run stops there and its later evaluations repeat the diverged model's "
                  "accuracy): " + "; ".join(
                      f"β = {b}, s = {s or 'none'}, {agg}, {atk}, seed {seed} at step {step}"
                      for (atk, agg, s, b, seed), step in sorted(diverged.items())) + "."]
    lines += agreement_lines([("final (step 600)", paper, ours),
                              ("steps 480–600", paper_late, ours_late),
                              ("all 20 evaluations", paper_all, ours_all)])
    lines += progress_lines(results)
    table = DOCS / "bucketing_table.md"
    table.write_text("\n".join(lines) + "\n")
    page = ROOT / "docs" / "reproductions.md"
    if page.is_file():  # the same table inside the page, between its markers
        text = page.read_text()
        start, end = "<!-- bucketing-table:start -->", "<!-- bucketing-table:end -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            tail = rest.split(end, 1)[1]
            page.write_text(f"{head}{start}\n{chr(10).join(lines)}\n{end}{tail}")
    aggs = ["avg", "cm", "cp", "krum", "rfa", "tm"]
    for beta in (0.9, 0.0):
        for s in BUCKETS:
            sub = {}
            for c, v in results.items():
                atk, agg, cs, cbeta = labels(c)
                if cbeta == beta and (agg == "avg" or cs == s):
                    sub[Cell(atk, agg, c.seed)] = v
            plot_heatmap(sub, list(ATTACKS), aggs, DOCS / f"bucketing_beta{beta}_s{s}.png",
                         title=f"shieldwall: non-iid MNIST, β={beta}, s={s or 'none'}")
            ref = {Cell(atk, agg, k): v / 100 for (atk, agg, cs, cbeta), vals in paper.items()
                   if cbeta == beta and cs == s for k, v in enumerate(vals)}
            plot_heatmap(ref, list(ATTACKS), aggs, DOCS / f"paper_beta{beta}_s{s}.png",
                         title=f"paper's exp3 logs: β={beta}, s={s or 'none'}")
    attacks = [a for a in ATTACKS if a != "NA"]
    plot_curves(read_curves(CURVES), DOCS / "exp3_shieldwall.png",
                "shieldwall: test accuracy (%) on non-iid MNIST, n = 25, f = 5", attacks, BUCKETS)
    plot_curves(read_curves(PAPER), DOCS / "exp3_paper.png",
                "paper's exp3 logs: validation accuracy (%), n = 25, f = 5", attacks, BUCKETS)
    return table

