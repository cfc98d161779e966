"""PNG curves from run directories: test accuracy and losses per round, several runs per figure.

Runs on text (records with ``test_perplexity``) get a third panel: validation perplexity."""

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
        evals = [r for r in records if r.get("test_accuracy") is not None]
        if evals:
            ax_acc.plot([r["round"] for r in evals], [r["test_accuracy"] for r in evals],
                        marker="o", markersize=3, label=label)
            ax_loss.plot([r["round"] for r in evals], [r["test_loss"] for r in evals],
                         label=f"{label} (test)")
        train = [r for r in records if r.get("train_loss") is not None]
        ax_loss.plot([r["round"] for r in train], [r["train_loss"] for r in train],
                     linestyle="--", alpha=0.7, label=f"{label} (train)")
        if text:  # masked LM: perplexity of the evaluation split (validation for text)
            ppl = [r for r in records if r.get("test_perplexity") is not None]
            axes[2].plot([r["round"] for r in ppl], [r["test_perplexity"] for r in ppl],
                         label=label)
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
