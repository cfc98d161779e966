"""benchmarks/_timing.py: medians over rounds with the candidates taking turns, on a fake clock."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _timing():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "_timing.py"
    spec = importlib.util.spec_from_file_location("_timing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeClock:
    """A clock that only the functions under test advance."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def work(self, name: str, costs: list[float]):
        def fn() -> None:
            self.calls.append(name)
            self.now += costs.pop(0)
        return fn


def test_paired_medians_take_turns_and_skip_the_warm_up():
    t = _timing()
    clock = FakeClock()
    a = clock.work("a", [100.0, 1.0, 5.0, 2.0])  # warm-up 100 s: not a sample
    b = clock.work("b", [100.0, 4.0, 4.0, 9.0])
    assert t.paired_medians([a, b], 3, clock=clock) == [2.0, 4.0]
    assert clock.calls == ["a", "b"] * 4  # one call of each per round, in turn


def test_inner_calls_are_averaged_and_the_budget_stops_early():
    t = _timing()
    clock = FakeClock()
    fn = clock.work("f", [1.0] * 2 + [1.0, 3.0] + [2.0, 2.0] + [9.0] * 10)
    # rounds of 2 calls: warm-up, then 4 s and 4 s spent; the budget of 7 s stops after two
    assert t.paired_medians([fn], 10, inner=2, budget=7.0, clock=clock) == [2.0]
    assert len(clock.calls) == 6
    slow = FakeClock()  # a warm-up over half the budget is the only sample
    assert t.paired_medians([slow.work("s", [5.0])], 10, budget=8.0, clock=slow) == [5.0]
    one = FakeClock()
    assert t.median_time(one.work("m", [7.0, 1.0, 3.0, 2.0]), 3, clock=one) == 2.0


def test_bad_repeats_are_refused():
    t = _timing()
    with pytest.raises(ValueError, match="repeats and inner must be >= 1"):
        t.paired_medians([lambda: None], 0)
