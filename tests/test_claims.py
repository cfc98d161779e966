"""What a remote client may claim besides its row (runtime/claims.py): exact bounds, and no
claim, however large, makes the check itself raise."""

from __future__ import annotations

import pytest

from shieldwall.runtime.claims import MAX_LOSS, check_claims


@pytest.mark.parametrize(("samples", "loss"), [(60, 0.3), (1, 0), (60.0, 2), (7, MAX_LOSS)])
def test_honest_claims_stand(samples, loss):
    assert check_claims(samples, loss, 60) is None


@pytest.mark.parametrize(("samples", "loss", "why"), [
    (61, 0.3, "num_samples 61 outside [1, 60]"),
    (0, 0.3, "num_samples 0 outside [1, 60]"),
    (1e15, 0.3, "num_samples 1e+15 outside"),
    pytest.param(10**5000, 0.3, "num_samples an integer of 16610 bits outside",
                 id="samples-5000-digits"),  # str() of it raises
    (60.5, 0.3, "not a whole number"),
    (float("inf"), 0.3, "not a whole number"),
    (True, 0.3, "is not a number"),
    (60, 1.7e308, "loss 1.7e+308 outside [0, 1e+06]"),  # its mean with others overflows
    pytest.param(60, 10**400, "loss an integer of 1329 bits outside",
                 id="loss-400-digits"),  # math.isfinite of it raises
    (60, -1, "loss -1 outside"),
    (60, float("nan"), "not a finite non-negative number"),
    (60, "0.3", "is not a number"),
])
def test_byzantine_claims_are_refused_with_a_reason(samples, loss, why):
    assert why in check_claims(samples, loss, 60)
