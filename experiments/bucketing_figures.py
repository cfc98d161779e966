"""The bucketing paper's exp3 figure, drawn from its logs or from ours by the same code.

``experiments/reproduce_bucketing.py --report`` calls :func:`plot_curves` on the paper's
transcribed evaluations (``results/bucketing_paper_exp3.csv``) and on ours
(``results/bucketing_mnist_curves.csv``); the keys are ``(attack, aggregator, s, β, seed)`` and
each curve maps an iteration to a test accuracy in percent.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

__all__ = ["plot_curves"]


def plot_curves(curves: dict[tuple[str, str, int, float, int], dict[int, float]], path: Path,
                title: str, attacks: Sequence[str] = ("BF", "LF", "mimic", "IPM", "ALIE"),
                buckets: Sequence[int] = (2, 0)) -> Path:
    """The paper's exp3 figure (``exp3.py --plot``: accuracy against iterations, one panel per
    rule (rows) and attack (columns), colour = bucket size s, line style = β): the mean over
    the seeds present, and their range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aggs = ["cm", "cp", "krum", "rfa"]
    fig, axes = plt.subplots(len(aggs), len(attacks), figsize=(3.0 * len(attacks),
                             2.4 * len(aggs)), sharex=True, sharey=True, squeeze=False)
    colours = {2: "tab:red", 0: "tab:blue"}
    styles = {0.9: "-", 0.0: "--"}
    for i, agg in enumerate(aggs):
        for j, atk in enumerate(attacks):
            ax = axes[i][j]
            for s in buckets:
                for beta in (0.9, 0.0):
                    runs = [c for (a, g, cs, b, _), c in curves.items()
                            if (a, g, cs, b) == (atk, agg, s, beta)]
                    steps = sorted({step for c in runs for step in c})
                    if not steps:
                        continue
                    vals = [[c[step] for c in runs if step in c] for step in steps]
                    ax.plot(steps, [statistics.fmean(v) for v in vals], styles[beta],
                            color=colours[s], lw=1.2, label=f"s = {s or 'none'}, β = {beta}")
                    if len(runs) > 1:
                        ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals],
                                        color=colours[s], alpha=0.12, lw=0)
            ax.set(xlim=(0, 600), ylim=(0, 100))
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"ATK = {atk}")
            if j == 0:
                ax.set_ylabel(f"AGG = {agg}\naccuracy (%)")
            if i == len(aggs) - 1:
                ax.set_xlabel("iterations")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=4, fontsize=9)
    fig.suptitle(f"{title}\nmean over the seeds present, their range shaded", x=0.02, ha="left",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
