"""The bucketing paper's exp3 grid as shieldwall cells, in run order, and its results CSV.

The grid of Karimireddy, He & Jaggi, ICLR 2022 (github.com/epfml/byzantine-robust-noniid-
optimizer, ``exp3.py`` and ``run.sh``): n = 25 workers of which f = 5 Byzantine, label-sorted
shards, its CNN (``bucketing_cnn``, every worker drawing the same dropout masks, drawn once for
the run, as its simulator does on a GPU), batch 32, lr 0.01, 600 steps; worker momentum
β ∈ {0, 0.9}; bucketing s ∈ {none, 2}; aggregators CM, CClip (τ = 10 / (1 − β): 10 for β = 0,
100 for β = 0.9, as its exp3 logs ran; 3 iterations from the previous aggregate, zero at
first), Krum, RFA (8 smoothed Weiszfeld steps from zero, ν = 0.1) and — not in the paper's
logs — trimmed mean; attacks BF, LF, mimic, IPM (ε = 0.1), ALIE (the code's z = Φ⁻¹(0.6));
3 seeds. The attacks see the honest workers' rows only (``knowledge=honest``), as in the
paper's code; mimic uses its warm-up of 1 round. Base config: ``bucketing_mnist.yaml``.

Cells run in order of information: every β = 0.9 cell with s = 2 and without for seed 0 (the
attacks with the largest contrasts in the paper first; seeds 1 and 2 of RFA without bucketing
and of CM with bucketing under IPM early, as their seed 0 ended far from the paper's), the
attack-free mean, then the same for β = 0 (then seeds 1 and 2 of the two β = 0 cells of the
coordinate-wise median whose seed 0 ended lowest against the paper's), then seeds 1 and 2 of
β = 0.9, then trimmed mean and attack-free references of every rule, then seeds 1 and 2 of the
five β = 0 cells whose seed 0 ended more than 10 points from the paper's mean, then of the rest
of β = 0. Each finished cell is a row of :data:`RESULTS` (committed), keyed by the paper's
labels: (attack, aggregator, s, β, seed).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shieldwall.atomic import write_text_atomic  # noqa: E402
from shieldwall.matrix import Cell  # noqa: E402

BASE = ROOT / "experiments" / "bucketing_mnist.yaml"
RESULTS = ROOT / "experiments" / "results" / "bucketing_mnist.csv"
MOMENTUM = "train_args.worker_momentum"

#: paper label → our attack spelling (the paper's variants, see docs/reproductions.md).
ATTACKS = {
    "NA": "none",
    "BF": "sign_flip",
    "LF": "label_flip",
    "mimic": "mimic(warmup=1,knowledge=honest)",
    "IPM": "ipm(epsilon=0.1,knowledge=honest)",
    "ALIE": "alie(z_rule=honest,knowledge=honest)",
}
#: paper label → our aggregator spelling; ``{tau}``: CClip's radius for the cell's β.
AGGREGATORS = {
    "cm": "median",
    "cp": "centered_clip(tau={tau},iterations=3,init=previous)",
    "krum": "krum(power=2)",
    "rfa": "geometric_median(nu=0.1,max_iter=8,tol=0,init=zeros)",
    "tm": "trimmed_mean",
}
BUCKETS = (2, 0)


def clip_tau(beta: float) -> float:
    """CClip's radius under worker momentum β: τ = 10 / (1 − β), the linear scaling of the
    paper's code as it ran exp3 (``utils.py`` at commit 1cbe521, the one its exp3 logs were
    committed with: ``--clip-scaling`` unset meant "linear" when β > 0)."""
    return round(10.0 / (1.0 - beta), 6)


def rule(agg: str, beta: float) -> str:
    return AGGREGATORS[agg].format(tau=f"{clip_tau(beta):g}")


def defense(agg: str, s: int, beta: float) -> str:
    return f"bucketing(s={s})+{rule(agg, beta)}" if s else rule(agg, beta)


def cell(atk: str, agg: str, s: int, beta: float, seed: int) -> Cell:
    d = "none" if agg == "avg" else defense(agg, s, beta)
    return Cell(ATTACKS[atk], d, seed, ((MOMENTUM, beta),))


def ordered_cells() -> list[Cell]:
    """Most informative first (see the module docstring)."""
    paper_aggs = ["rfa", "cp", "cm", "krum"]
    attacks = ["IPM", "ALIE", "BF", "LF", "mimic"]  # largest paper contrasts first
    out: list[Cell] = []
    for beta in (0.9, 0.0):
        for atk in attacks:
            for agg in paper_aggs:
                for s in BUCKETS:
                    out.append(cell(atk, agg, s, beta, 0))
        out.append(cell("NA", "avg", 0, beta, 0))

    def seeds(beta: float) -> list[Cell]:
        return [cell(atk, agg, s, beta, seed) for seed in (1, 2)
                for atk in ["NA", *attacks] for agg in (["avg"] if atk == "NA" else paper_aggs)
                for s in ((0,) if atk == "NA" else BUCKETS)]

    out += seeds(0.9)  # required: 3 seeds of every β = 0.9 cell of the paper
    for beta in (0.9, 0.0):  # not in the paper's logs: one seed each
        for agg in ["cp", "cm", "krum", "rfa", "tm"]:
            for s in BUCKETS:
                out.append(cell("NA", agg, s, beta, 0))
        for atk in attacks:
            for s in BUCKETS:
                out.append(cell(atk, "tm", s, beta, 0))
    # β = 0 cells whose seed 0 ended more than 10 points from the paper's mean where the
    # paper's own seeds split (docs/reproductions.md): their other seeds before the rest
    out += [cell(atk, agg, s, 0.0, seed) for seed in (1, 2) for atk, agg, s in
            (("ALIE", "krum", 2), ("BF", "krum", 2), ("LF", "krum", 2), ("mimic", "cm", 0),
             ("ALIE", "rfa", 0))]
    out += seeds(0.0)
    # the cells whose seed 0 ended far from the paper's (docs/reproductions.md): their other
    # seeds early — at β = 0.9 among the first, at β = 0 right after that β's seed 0
    after_beta0 = out.index(cell("NA", "avg", 0, 0.0, 0)) + 1
    out[after_beta0:after_beta0] = [cell(atk, "cm", s, 0.0, seed) for atk, s in
                                    (("IPM", 0), ("BF", 2)) for seed in (1, 2)]
    out[2:2] = [cell("IPM", "rfa", 0, 0.9, seed) for seed in (1, 2)]
    out[4:4] = [cell("IPM", "cm", 2, 0.9, seed) for seed in (1, 2)]
    seen: set[Cell] = set()
    return [c for c in out if not (c in seen or seen.add(c))]


def labels(c: Cell) -> tuple[str, str, int, float]:
    """(paper attack, paper aggregator, s, β) of a cell."""
    atk = next(k for k, v in ATTACKS.items() if v == c.attack)
    beta = dict(c.axes)[MOMENTUM]
    if c.defense == "none":
        return atk, "avg", 0, beta
    s = 0
    rest = c.defense
    if rest.startswith("bucketing("):
        s = int(rest[len("bucketing(s="):rest.index(")")])
        rest = rest[rest.index("+") + 1:]
    agg = next(k for k in AGGREGATORS if rule(k, beta) == rest)
    return atk, agg, s, beta


def read_results(path: Path = RESULTS) -> dict[Cell, float]:
    if not path.is_file():
        return {}
    out = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            c = cell(row["attack"], row["aggregator"], int(row["s"]), float(row["beta"]),
                     int(row["seed"]))
            out[c] = float(row["accuracy"]) / 100
    return out


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]],
              comment: str = "") -> None:
    """``rows`` under ``header`` (after a ``# comment`` line, if any) into ``path``, whole or
    not at all (:func:`shieldwall.atomic.write_text_atomic`); the csv module's line ends."""
    text = io.StringIO(newline="")
    if comment:
        text.write(f"# {comment}\n")
    w = csv.writer(text)
    w.writerow(header)
    w.writerows(rows)
    write_text_atomic(path, text.getvalue())


def write_results(results: dict[Cell, float]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted((*labels(c), c.seed, acc) for c, acc in results.items() if acc is not None)
    write_csv(RESULTS, ["attack", "aggregator", "s", "beta", "seed", "accuracy"],
              ([atk, agg, s, beta, seed, f"{100 * acc:.2f}"]
               for atk, agg, s, beta, seed, acc in rows))

