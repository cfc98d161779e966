"""PNG curves from run directories: test accuracy and losses per round, several runs per figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shieldwall.metrics.logger import read_metrics

__all__ = ["plot_runs"]


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path) -> Path:
    """Draw accuracy (left) and loss (right) per round for each run into ``output`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = 0
    for run_dir in run_dirs:
        records = read_metrics(run_dir)
        if not records:
            raise FileNotFoundError(f"no metrics.jsonl records in {str(run_dir)!r}")
        label = Path(run_dir).name
        evals = [r for r in records if r.get("test_accuracy") is not None]
        if evals:
            ax_acc.plot([r["round"] for r in evals], [r["test_accuracy"] for r in evals],
                        marker="o", markersize=3, label=label)
            ax_loss.plot([r["round"] for r in evals], [r["test_loss"] for r in evals],
                         label=f"{label} (test)")
        train = [r for r in records if r.get("train_loss") is not None]
        ax_loss.plot([r["round"] for r in train], [r["train_loss"] for r in train],
                     linestyle="--", alpha=0.7, label=f"{label} (train)")
        drawn += 1
    ax_acc.set(xlabel="round", ylabel="test accuracy", title="Test accuracy")
    ax_loss.set(xlabel="round", ylabel="loss", title="Loss")
    ax_loss.set_yscale("log")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
