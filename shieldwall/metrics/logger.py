"""Where a run's numbers go: ``metrics.jsonl``, TensorBoard event files and a progress bar.

``metrics.jsonl`` has one JSON object per evaluated round (round, train loss, test loss and
accuracy, wall time, Byzantine clients, rejected rows, the defense's selection) and is the source
for ``shieldwall plot``. On resume, lines after the checkpoint's round are dropped first so the
file stays one line per round; that rewrite is atomic (temporary file, then rename), so a full
disk or a crash leaves the old file whole. A torn last line (a crash or a full disk in the middle
of an append) is skipped with a warning; a bad line anywhere else is one error naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from shieldwall.atomic import write_text_atomic

__all__ = ["MetricsLogger", "keep_rounds_before", "progress_line", "read_metrics"]

log = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _records(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of ``path`` and whether its last line was torn (and left out)."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not UTF-8 text (byte offset {exc.start}); "
                         "repair or remove the file") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # cut off mid-append: the round is run again on resume
                log.warning("%s: the last line is incomplete (%s); it is left out", path, exc)
                return records, True
            raise ValueError(f"{str(path)!r} line {number} is not a JSON record ({exc}); "
                             "repair or remove that line") from None
        if not isinstance(record, dict):
            raise ValueError(f"{str(path)!r} line {number} is not a JSON record (an object "
                             f"{{...}}), got {line.strip()[:40]!r}; repair or remove that line")
        records.append(record)
    return records, False


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (empty when there is none)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return _records(path)[0]


def keep_rounds_before(path: str | Path, start_round: int) -> None:
    """Drop the records of ``path`` (a ``metrics.jsonl``) from ``start_round`` on, and a torn
    last line, before a resumed run appends; the file is rewritten only when something is
    dropped, atomically (a full or read-only disk raises and leaves the old file whole)."""
    path = Path(path)
    if not path.is_file():
        return
    records, torn = _records(path)
    kept = [r for r in records if r.get("round", -1) < start_round]
    if len(kept) == len(records) and not torn:
        return
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


def progress_line(record: dict[str, Any], total_rounds: int) -> str:
    """One round as a line: ``round 3/10: train loss 0.712, test acc 90.81%``."""
    parts = [f"round {int(record['round']) + 1}/{total_rounds}"]
    details = []
    if record.get("train_loss") is not None:
        details.append(f"train loss {_number(record['train_loss']):.4f}")
    if record.get("test_accuracy") is not None:
        details.append(f"test acc {100 * _number(record['test_accuracy']):.2f}%")
    if record.get("round_time") is not None:
        details.append(f"{_number(record['round_time']):.2f}s")
    return parts[0] + (": " + ", ".join(details) if details else "")


class MetricsLogger:
    """Writes per-round records; a context manager that closes its files.

    Args:
        run_dir: the run directory.
        total_rounds: for the progress bar.
        start_round: first round this process will log (resume).
        tensorboard: write TensorBoard event files under ``run_dir/tensorboard``.
        progress: show a progress bar (``None``: only on a terminal and outside CI). Without
            a bar each round is one log line instead (round, loss, accuracy), so piped and
            redirected output keeps its progress.

    Rows rejected in a round (malformed, non-finite, oversize, absent…) are named on the
    console every round, with or without the bar.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        total_rounds: int,
        start_round: int = 0,
        tensorboard: bool = True,
        progress: bool | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self._truncate_after(start_round - 1)
        self._file = self.path.open("a")
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(
                    str(self.run_dir / "tensorboard"), purge_step=start_round
                )
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                log.warning("tensorboard is not installed: no event files will be written")
        if progress is None:
            progress = sys.stderr.isatty() and not os.environ.get("CI")
        self.total_rounds = total_rounds
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_rounds, initial=start_round, unit="round", leave=True)

    def _truncate_after(self, last_round: int) -> None:
        keep_rounds_before(self.path, last_round + 1)

    def log_round(self, record: dict[str, Any]) -> None:
        """Append one round's record; scalars also go to TensorBoard and the bar."""
        self._file.write(json.dumps(_clean(record)) + "\n")
        self._file.flush()
        step = int(record["round"])
        if self._writer is not None:
            for key in ("train_loss", "test_loss", "test_accuracy", "aggregate_norm",
                        "test_perplexity", "train_perplexity"):
                value = record.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
        rejected = record.get("rejected")
        if rejected:
            text = ", ".join(f"client {c}: {why}" for c, why in rejected.items())
            self._say(f"round {step + 1}/{self.total_rounds}: rejected {len(rejected)} row(s): "
                      f"{text}", logging.WARNING)
        if self._bar is not None:
            acc = record.get("test_accuracy")
            self._bar.set_postfix(
                loss=f"{_number(record.get('train_loss')):.3f}",
                **({"acc": f"{acc:.3f}"} if acc is not None else {}),
            )
            self._bar.update(1)
        else:
            self._say(progress_line(record, self.total_rounds), logging.INFO)

    def _say(self, text: str, level: int) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            log.log(level, text)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
