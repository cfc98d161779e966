"""Timing helpers shared by the benchmarks: medians over repeats, candidates taking turns.

Every benchmark compares a candidate with a baseline and a floor measured in the same run
(``docs/benchmarks/``). Timing them in turn, one call of each per round, makes a busy stretch
of a shared machine slow all of them alike, so the ratios hold even when the absolute times
drift; the median of the rounds ignores the odd outlier. The scripts run as
``python benchmarks/NAME.py`` and import this module by name.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["median_time", "paired_medians"]


def paired_medians(fns: list[Callable[[], object]], repeats: int, *, inner: int = 1,
                   budget: float | None = None, clock: Callable[[], float] = time.perf_counter,
                   sync: Callable[[], None] | None = None) -> list[float]:
    """Each of ``fns``' median time per call (seconds), over rounds in which every function
    runs ``inner`` times in turn, after one warm-up round.

    ``repeats``: the rounds timed. ``budget`` (seconds, optional): stop early once the timed
    rounds have spent it (at least one round is timed), and when the warm-up round alone took
    more than half of it, keep that round as the only sample. ``clock``: ``time.perf_counter``
    (wall) by default; ``time.process_time`` or ``time.thread_time`` count CPU only. ``sync``:
    called before and after each timing, e.g. ``torch.cuda.synchronize``, so that queued
    device work is counted.
    """
    if repeats < 1 or inner < 1:
        raise ValueError(f"repeats and inner must be >= 1, got {repeats} and {inner}")
    samples: list[list[float]] = [[] for _ in fns]

    def one_round() -> float:
        total = 0.0
        for fn, bucket in zip(fns, samples):
            if sync is not None:
                sync()
            start = clock()
            for _ in range(inner):
                fn()
            if sync is not None:
                sync()
            elapsed = clock() - start
            bucket.append(elapsed / inner)
            total += elapsed
        return total

    warm_up = one_round()
    if budget is not None and warm_up > budget / 2:
        return [bucket[0] for bucket in samples]
    for bucket in samples:
        bucket.clear()
    spent = 0.0
    while len(samples[0]) < repeats and (budget is None or spent < budget or not samples[0]):
        spent += one_round()
    return [statistics.median(bucket) for bucket in samples]


def median_time(fn: Callable[[], object], repeats: int, *,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """``fn``'s median time per call (seconds) over ``repeats`` calls after one warm-up."""
    return paired_medians([fn], repeats, clock=clock)[0]
