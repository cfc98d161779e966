"""PNG curves from run directories: test accuracy and losses per round, several runs per figure.

Runs on text (records with ``test_perplexity``) get a third panel: validation perplexity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shieldwall.metrics.logger import read_metrics

__all__ = ["plot_runs"]


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path) -> Path:
    """Draw accuracy (left) and loss (right) per round for each run into ``output`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_records = []
    for run_dir in run_dirs:
        records = read_metrics(run_dir)
        if not records:
            raise FileNotFoundError(f"no metrics.jsonl records in {str(run_dir)!r}")
        all_records.append(records)
    text = any(r.get("test_perplexity") is not None for rs in all_records for r in rs)
    fig, axes = plt.subplots(1, 3 if text else 2, figsize=(16 if text else 11, 4))
    ax_acc, ax_loss = axes[0], axes[1]
    drawn = 0
    for run_dir, records in zip(run_dirs, all_records):
        label = Path(run_dir).name
        if _series(records, "test_accuracy")[0]:
            ax_acc.plot(*_series(records, "test_accuracy"), marker="o", markersize=3, label=label)
            ax_loss.plot(*_series(records, "test_loss"), label=f"{label} (test)")
        ax_loss.plot(*_series(records, "train_loss"), linestyle="--", alpha=0.7,
                     label=f"{label} (train)")
        if text:  # masked LM: perplexity of the evaluation split (validation for text)
            axes[2].plot(*_series(records, "test_perplexity"), label=label)
        drawn += 1
    if text:
        axes[2].set(xlabel="round", ylabel="perplexity", title="Validation perplexity",
                    yscale="log")
    ax_acc.set(xlabel="round", ylabel="test accuracy", title="Test accuracy")
    ax_loss.set(xlabel="round", ylabel="loss", title="Loss")
    ax_loss.set_yscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Rounds and values of the records with a number under both ``round`` and ``key`` (a record
    a crash or a hand edit left without one is skipped, not a ``KeyError``)."""
    points = [(r.get("round"), r.get(key)) for r in records]
    points = [(x, y) for x, y in points if _is_number(x) and _is_number(y)]
    return [x for x, _ in points], [y for _, y in points]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
