"""Perplexity: the language-model view of a round's losses.

For token-level (masked-LM) data sets the mean cross-entropy per predicted token :math:`\\ell`
(nats) has perplexity :math:`\\exp(\\ell)`; a uniform guess over V tokens has perplexity V.
:func:`perplexities` adds ``test_perplexity`` (the per-round evaluation split: ``valid`` for text)
and ``train_perplexity`` (honest workers' mean training loss of the round) to a metrics record.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["perplexity", "perplexities"]

MAX_LOSS = 50.0
"""Losses above this are reported as perplexity exp(50) (a diverged run, not an overflow)."""


def perplexity(loss: float | None) -> float | None:
    """``exp(loss)`` (``None`` for a missing or non-finite loss)."""
    if loss is None or not math.isfinite(loss):
        return None
    return math.exp(min(float(loss), MAX_LOSS))


def perplexities(dataset: Any, record: dict[str, Any]) -> dict[str, Any]:
    """``{test_perplexity, train_perplexity}`` for a token-level data set's record, else ``{}``."""
    if getattr(dataset, "test_y", None) is None or dataset.test_y.dim() < 2:
        return {}
    return {
        "test_perplexity": perplexity(record.get("test_loss")),
        "train_perplexity": perplexity(record.get("train_loss")),
    }
