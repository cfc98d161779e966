"""Score the model backups of a run: test loss, top-1 and top-5 accuracy per backup.

ByzShield's ``distributed_evaluator.py`` loads ``train_dir/model_step_<i>`` for
i = cur_step + eval_freq, cur_step + 2·eval_freq, … ≤ last_step, evaluates each on the test set
and prints Matlab-style lists; its curves are the paper's accuracy-vs-iteration figures.
:func:`evaluate_backups` does the same on the backups of :class:`~.schedule.Backups` (the data
set and model come from ``backup.yaml``, or are given), and :func:`write_curve` writes them as
CSV (``step,test_loss,prec1,prec5``) and a PNG curve. Accuracies are fractions in [0, 1]
(ByzShield prints percentages).
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from shieldwall.checkpoint import read_torch_file
from shieldwall.redundancy.schedule import BACKUP_META, BACKUP_PREFIX

__all__ = ["Score", "list_backups", "evaluate_backups", "write_curve", "read_curve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Score:
    """One backup's test scores."""

    step: int
    test_loss: float
    prec1: float
    prec5: float


def list_backups(model_dir: str | Path) -> dict[int, Path]:
    """``{step: path}`` of the ``model_step_<i>`` files in ``model_dir``."""
    out: dict[int, Path] = {}
    for path in Path(model_dir).glob(f"{BACKUP_PREFIX}*"):
        tail = path.name[len(BACKUP_PREFIX):]
        if tail.isdigit():
            out[int(tail)] = path
    return dict(sorted(out.items()))


def _meta(model_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    path = model_dir / BACKUP_META
    if path.is_file():
        meta = yaml.safe_load(path.read_text()) or {}
    meta.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("dataset", "model"):
        if not meta.get(key):
            raise ValueError(
                f"{model_dir}: no {BACKUP_META} names the {key}; give --"
                f"{'network' if key == 'model' else 'dataset'}"
            )
    return meta


def _load_backup(net: torch.nn.Module, path: Path, model: str) -> None:
    """``net`` takes the parameters in ``path``; a corrupt file or another model's backup is one
    ``ValueError`` naming the file."""
    state = read_torch_file(path, "model backup")
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"model backup {str(path)!r} does not fit the model {model!r} "
                         f"({detail}); give the run's --network") from None


def _score(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple:
    model.eval()
    loss, top1, top5 = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, int(y.shape[0]), batch):
            logits = model(x[start:start + batch])
            target = y[start:start + batch]
            loss += float(F.cross_entropy(logits, target, reduction="sum"))
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            top1 += int((top[:, 0] == target).sum())
            top5 += int((top == target.unsqueeze(1)).any(dim=1).sum())
    n = max(int(y.shape[0]), 1)
    return loss / n, top1 / n, top5 / n


def evaluate_backups(
    model_dir: str | Path, *, eval_freq: int | None = None, cur_step: int = 0,
    last_step: int = 0, dataset: str | None = None, model: str | None = None,
    data_dir: str | None = None, eval_batch_size: int = 10000, follow: float = 0.0,
) -> list[Score]:
    """Scores of the backups in ``model_dir`` (module docstring).

    Args:
        eval_freq: only steps cur_step + k·eval_freq (ByzShield's order); ``None``: every backup.
        cur_step, last_step: the range (``last_step=0``: no upper end).
        dataset, model, data_dir: override ``backup.yaml``.
        follow: seconds to keep waiting for the next expected backup (a run still writing them);
            0 scores what is there.
    """
    from shieldwall.data import load_dataset
    from shieldwall.models import MODELS

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"--model-dir {model_dir} is not a folder")
    for flag, value in (("--eval-freq", eval_freq), ("--eval-batch-size", eval_batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    meta = _meta(model_dir, {"dataset": dataset, "model": model, "data_cache_dir": data_dir})
    data = load_dataset(meta["dataset"], meta.get("data_cache_dir"))
    net = MODELS.get(meta["model"])(data.input_shape, data.num_classes)
    scores: list[Score] = []
    want = cur_step + (eval_freq or 0)
    waited_since = time.monotonic()
    while True:
        found = list_backups(model_dir)
        todo = [s for s in found if s > cur_step and (last_step == 0 or s <= last_step)
                and (eval_freq is None or (s - cur_step) % eval_freq == 0)
                and s not in {x.step for x in scores}]
        for step in todo:
            _load_backup(net, found[step], meta["model"])
            loss, p1, p5 = _score(net, data.test_x, data.test_y, eval_batch_size)
            scores.append(Score(step, loss, p1, p5))
            log.info("step %d: test loss %.4f, prec@1 %.4f, prec@5 %.4f", step, loss, p1, p5)
            waited_since = time.monotonic()
        if scores:
            want = max(x.step for x in scores) + (eval_freq or 1)
        done = last_step != 0 and want > last_step
        if follow <= 0 or done or time.monotonic() - waited_since > follow:
            break
        time.sleep(min(2.0, follow))
    if not scores:
        raise ValueError(f"{model_dir}: no {BACKUP_PREFIX}<step> backups in the range asked for")
    return sorted(scores, key=lambda s: s.step)


def write_curve(scores: list[Score], csv_path: str | Path, png_path: str | Path | None = None,
                title: str = "") -> None:
    """``step,test_loss,prec1,prec5`` rows, and an accuracy-vs-iteration PNG."""
    csv_path = Path(csv_path)
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "test_loss", "prec1", "prec5"])
        for s in scores:
            w.writerow([s.step, f"{s.test_loss:.6g}", f"{s.prec1:.6f}", f"{s.prec5:.6f}"])
    if png_path is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([s.step for s in scores], [s.prec1 for s in scores], marker="o", label="top-1")
    ax.set_xlabel("iteration")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title or str(csv_path.parent.name))
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def read_curve(csv_path: str | Path) -> list[Score]:
    """The rows :func:`write_curve` wrote."""
    with Path(csv_path).open() as fh:
        return [Score(int(r["step"]), float(r["test_loss"]), float(r["prec1"]),
                      float(r["prec5"])) for r in csv.DictReader(fh)]
