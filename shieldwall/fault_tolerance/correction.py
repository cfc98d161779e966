r"""Correcting a convicted worker's gradient when no replica is at hand.

**Training pairs.** On check steps a convicted worker :math:`i`'s result :math:`y` for sub-batch
:math:`b` comes with an honest replica, the true gradient :math:`x` of that sub-batch. Each pair is
stored with a *context* :math:`m`: the mean of the step's trusted rows from the other sub-batches
(the batches owned by unconvicted workers, :math:`b` left out so that :math:`m` never contains
:math:`x`; on a plain step it is exactly what is known besides :math:`y`).

**Model** (per worker, per coordinate :math:`c`): an affine predictor

.. math::
    \hat x_c = a_c + \beta_c\, y_c + \gamma_c\, m_c ,

fitted by ridge regression from exponentially discounted sufficient statistics (decay
:math:`\rho` per pair, so the fit follows the drift of training). With features
:math:`z = (1, y_c, m_c)`, :math:`G_c = \sum \rho^{\cdot} z z^\top` and
:math:`r_c = \sum \rho^{\cdot} z\, x_c`,

.. math::
    \theta_c = (G_c + \Lambda_c)^{-1}(r_c + \Lambda_c \bar\theta), \qquad
    \Lambda_c = n_0 \operatorname{diag}(1,\ e_c,\ e_c), \qquad
    e_c = \tfrac{1}{n}\textstyle\sum \rho^{\cdot} x_c^2 ,

i.e. :math:`n_0` pseudo-pairs, at the coordinate's typical *true* gradient size
:math:`\sqrt{e_c}`, pulling every coordinate toward the *pooled* fit
:math:`\bar\theta = (\sum_c G_c)^{-1} \sum_c r_c` (one :math:`(a, \beta, \gamma)` for all
coordinates, well determined from a single pair since it sees all :math:`d` coordinates).
:math:`\beta, \gamma` are ratios of gradients of the same coordinate, so one scale :math:`e_c` for
both is natural; scaling the penalty by each feature's own training energy instead lets a feature
that happened to be tiny during training take a huge coefficient, which explodes when it grows.

**Safeguard.** Each worker's model is used only while its prequential error (exponential average
over scored pairs, weight 0.3 for the newest) is no larger than that of exclusion,
:math:`\hat x = m`; otherwise — and before the first scored pair — the prediction is :math:`m`,
which for mean aggregation is exactly excluding the worker. A correction can therefore not be worse
than exclusion for long.

**Bound** (:func:`bound_correction`; a convicted worker can send anything). A prediction is used as

.. math::
    \tilde x = \hat x \cdot \min\bigl(1,\ R / \lVert \hat x \rVert_2\bigr)
    \quad (\hat x \text{ finite}), \qquad \tilde x = m \quad \text{otherwise},

with :math:`R = \kappa \max_b \lVert x_b \rVert_2` over the step's trusted rows and
:math:`\kappa` = :data:`NORM_MARGIN` = 2: whatever :math:`y` is (huge, NaN, Inf), a corrected row
is finite and moves a mean of :math:`n` rows by at most :math:`R/n`. The margin leaves exact
corrections alone: the sub-batch gradients of one step differ in norm by far less than 2× (at
most 1.35× between the largest and the next on digits, ``lr`` and ``mlp``, 20 steps). The
safeguard scores :math:`\tilde x`, the row that is used.

**Input that cannot be learned.** A pair with a NaN/Inf in :math:`y`, :math:`m` or :math:`x`, or
whose squares overflow the statistics' dtype, is neither scored nor learned (it would make the
sums, and with them every coordinate's fit and the pooled fit, NaN for good); a non-finite score
(an overflowing error) is not averaged in. The statistics, the coefficients and the scores
therefore stay finite; should the pooled fit still come out non-finite, it is
:math:`(a, \beta, \gamma) = (0, 0, 1)`, i.e. :math:`\hat x = m`.

**What is learnable.**

* Systematic faults are inverted exactly: scaling :math:`y = s x` gives :math:`\beta = 1/s`
  (sign flip: :math:`-1`), a fixed bias :math:`y = x + \delta` gives :math:`a_c = -\delta_c`,
  :math:`\beta = 1`; the held-out error goes to rounding level.
* Additive zero-mean noise :math:`y = x + \xi`, :math:`\xi \sim N(0, \sigma^2)` cannot be undone;
  the best any predictor can do is the posterior mean :math:`E[x \mid y, m]`, a shrinkage of
  :math:`y` toward what the other workers say, with :math:`\beta_c \approx
  \operatorname{Var}(x_c \mid m) / (\operatorname{Var}(x_c \mid m) + \sigma^2)`. For
  :math:`\sigma` much larger than a sub-batch gradient's spread, :math:`\beta \to 0` and the
  correction is the honest workers' mean (as good as excluding the worker, no better); for
  :math:`\sigma` comparable to the spread it beats both the raw row and exclusion.

**Errors reported** (prequential: a pair is scored before it is learned, so every score is on an
unseen step): ``mse`` :math:`= \lVert \hat x - x \rVert^2 / d`, ``mape`` :math:`=
\sum_c |\hat x_c - x_c| / \sum_c |x_c|` (absolute percentage error weighted by :math:`|x_c|`:
gradient coordinates cross zero, so the unweighted mean of :math:`|\hat x_c - x_c|/|x_c|` is
dominated by near-zero coordinates), and the same two for the uncorrected row (``raw_*``) and for
exclusion, :math:`\hat x = m` (``exclude_*``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["RidgeCorrector", "CorrectionBank", "bound_correction", "prediction_errors", "solve3"]

NORM_MARGIN = 2.0
""":math:`\\kappa`: a corrected row's norm is at most this times the step's largest trusted norm."""
EXCLUSION = (0.0, 0.0, 1.0)
""":math:`(a, \\beta, \\gamma)` of :math:`\\hat x = m`: the pooled fit when it is not finite."""


def prediction_errors(pred: Tensor, true: Tensor) -> tuple[float, float]:
    """``(mse, mape)`` of ``pred`` against ``true`` (``mape`` weighted, see module docstring);
    sums accumulate in float64."""
    diff = pred - true
    mse = float(diff.square().sum(dtype=torch.float64)) / max(diff.numel(), 1)
    denom = float(true.abs().sum(dtype=torch.float64))
    mape = float(diff.abs().sum(dtype=torch.float64)) / denom if denom > 0 else float("inf")
    return mse, mape


def all_finite(*tensors: Tensor) -> bool:
    """Whether every entry of every tensor is finite: one float64 sum each, through which NaN
    and Inf propagate (float32 entries cannot overflow it; float64 entries that do count as
    non-finite, which errs on the safe side)."""
    return all(math.isfinite(float(t.sum(dtype=torch.float64))) for t in tensors)


def bound_correction(pred: Tensor, m: Tensor, max_norm: float) -> tuple[Tensor, str]:
    r"""The row a correction may contribute (module docstring, *Bound*):
    :math:`\hat x \min(1, R/\lVert \hat x \rVert_2)` when ``pred`` is finite, else ``m``.

    Args:
        pred: the model's :math:`\hat x`.
        m: the context (exclusion's prediction), finite.
        max_norm: :math:`R` (:data:`NORM_MARGIN` times the largest norm of the step's trusted
            rows).

    Returns:
        ``(row, how)`` with ``how`` one of ``"model"``, ``"clipped"`` or ``"context"``.

    >>> bound_correction(torch.tensor([3.0, 4.0]), torch.zeros(2), 2.5)
    (tensor([1.5000, 2.0000]), 'clipped')
    """
    norm = float(torch.linalg.vector_norm(pred, dtype=torch.float64))
    if not math.isfinite(norm):
        return m.clone(), "context"
    if norm <= max_norm:
        return pred, "model"
    return pred * (max_norm / norm), "clipped"


def solve3(g: dict[str, Tensor], r: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Solve ``d`` symmetric 3×3 systems at once by the adjugate (elementwise ops only: much
    faster than a batched LU for millions of tiny systems).

    Args:
        g: the upper triangle as ``(d,)`` tensors (or scalars) under keys ``00 01 02 11 12 22``.
        r: the right-hand sides, three ``(d,)`` tensors.

    Returns:
        ``(3, d)``.
    """
    a00, a01, a02, a11, a12, a22 = (g[k] for k in ("00", "01", "02", "11", "12", "22"))
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    inv_det = 1.0 / (a00 * c00 + a01 * c01 + a02 * c02)
    r0, r1, r2 = r
    return torch.stack(
        [
            (c00 * r0 + c01 * r1 + c02 * r2) * inv_det,
            (c01 * r0 + c11 * r1 + c12 * r2) * inv_det,
            (c02 * r0 + c12 * r1 + c22 * r2) * inv_det,
        ]
    )


class RidgeCorrector:
    """One worker's per-coordinate ridge model (module docstring).

    Args:
        dim: gradient length ``d``.
        prior_strength: :math:`n_0`, pseudo-pairs of shrinkage toward the pooled fit.
        decay: :math:`\\rho` in ``(0, 1]``, discount of older pairs.
        device, dtype: where and how the statistics live. float32 (the default) holds the
            exact inversions to ~1e-12 relative and costs a third of float64's time; the sums
            over coordinates (the pooled fit) accumulate in float64 either way.
    """

    def __init__(
        self,
        dim: int,
        *,
        prior_strength: float = 2.0,
        decay: float = 0.98,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if prior_strength < 0 or not 0 < decay <= 1:
            raise ValueError("prior_strength must be >= 0 and decay in (0, 1]")
        self.dim = dim
        self.prior_strength = prior_strength
        self.decay = decay
        # discounted sums of y, m, y², ym, m², x, xy, xm, x² (rows), and of 1 (self.n)
        self.stats = torch.zeros(9, dim, dtype=dtype, device=device)
        self.n = 0.0
        self.num_pairs = 0
        self._theta: Tensor | None = None
        self._theta32: Tensor | None = None

    def update(self, y: Tensor, m: Tensor, x: Tensor) -> bool:
        """Learn one pair: faulty row ``y``, context ``m``, true gradient ``x``.

        Returns ``False``, and leaves the model as it was, when the pair has a NaN/Inf or its
        products overflow the statistics' dtype (e.g. :math:`|y_c| > 1.8 \\cdot 10^{19}` in
        float32): such a pair would make the sums non-finite for good."""
        y, m, x = (t.to(self.stats.device, self.stats.dtype) for t in (y, m, x))
        new = torch.stack([y, m, y * y, y * m, m * m, x, x * y, x * m, x * x])
        new.add_(self.stats, alpha=self.decay)
        if not all_finite(new):
            return False
        self.stats = new
        self.n = self.n * self.decay + 1.0
        self.num_pairs += 1
        self._theta = self._theta32 = None
        return True

    def fit(self) -> Tensor:
        """Coefficients ``(3, d)`` (rows ``a``, ``beta``, ``gamma``), cached."""
        if self._theta is not None:
            return self._theta
        if self.n == 0:
            raise RuntimeError("the correction model has no training pairs yet")
        sy, sm, syy, sym, smm, sx, sxy, sxm, sxx = self.stats
        n = self.n
        # pooled fit: one (a, beta, gamma) from the sums over all coordinates
        tot = self.stats.sum(1, dtype=torch.float64).tolist()
        pooled_g = torch.tensor(
            [[n * self.dim, tot[0], tot[1]], [tot[0], tot[2], tot[3]], [tot[1], tot[3], tot[4]]],
            dtype=torch.float64,
        )
        pooled_g += 1e-12 * pooled_g.diagonal().mean() * torch.eye(3, dtype=torch.float64)
        pooled = torch.linalg.solve(pooled_g, torch.tensor(tot[5:8], dtype=torch.float64))
        pa, pb, pc = pooled.tolist() if all_finite(pooled) else EXCLUSION
        # per coordinate: (G + Λ) θ = r + Λ θ̄, Λ = n0 diag(1, e, e), e = Σx²/n (floored)
        e = sxx / n
        e = e + max(1e-6 * float(e.mean()), torch.finfo(e.dtype).tiny * 1e4)
        l0 = self.prior_strength + 1e-6 * n
        le = self.prior_strength * e
        g = {"00": n + l0, "01": sy, "02": sm, "11": syy + le, "12": sym, "22": smm + le}
        r = (sx + l0 * pa, sxy + le * pb, sxm + le * pc)
        theta = solve3(g, r)
        prior = torch.tensor([pa, pb, pc], dtype=theta.dtype, device=theta.device)[:, None]
        self._theta = torch.where(torch.isfinite(theta), theta, prior)  # degenerate: pooled
        self._theta32 = None
        return self._theta

    def predict(self, y: Tensor, m: Tensor) -> Tensor:
        """:math:`\\hat x = a + \\beta y + \\gamma m`, in ``y``'s dtype and device."""
        theta = self.fit()
        if self._theta32 is None or self._theta32.dtype != y.dtype:
            self._theta32 = theta.to(device=y.device, dtype=y.dtype)
        a, beta, gamma = self._theta32
        return torch.addcmul(torch.addcmul(a, beta, y), gamma, m)

    def state_dict(self) -> dict[str, Any]:
        """The discounted statistics and pair counts (the fit is recomputed from them)."""
        return {"stats": self.stats.cpu().clone(), "n": self.n, "num_pairs": self.num_pairs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; a model of another ``dim`` is a ``ValueError``."""
        stats = state["stats"]
        if tuple(stats.shape) != tuple(self.stats.shape):
            raise ValueError(f"correction model state has statistics of shape "
                             f"{tuple(stats.shape)}, expected {tuple(self.stats.shape)}")
        self.stats = stats.to(self.stats.device, self.stats.dtype).clone()
        self.n, self.num_pairs = float(state["n"]), int(state["num_pairs"])
        self._theta = self._theta32 = None


class CorrectionBank:
    """One :class:`RidgeCorrector` per convicted worker, the safeguard, and the error record.

    Args:
        dim: gradient length.
        **kwargs: passed to every :class:`RidgeCorrector`.
    """

    KEYS = ("mse", "mape", "raw_mse", "raw_mape", "exclude_mse", "exclude_mape")
    EMA = 0.3

    def __init__(self, dim: int, **kwargs) -> None:
        self.dim = dim
        self.kwargs = kwargs
        self.models: dict[int, RidgeCorrector] = {}
        self.score: dict[int, tuple[float, float]] = {}
        """worker → exponential averages of (model mse, exclusion mse) over scored pairs."""
        self.history: list[dict[str, float]] = []
        """One record per scored pair: step, worker and :attr:`KEYS`."""
        self.fallbacks = 0
        """Predictions replaced by ``m``: by the safeguard, or because they were not finite."""
        self.clipped = 0
        """Predictions scaled down to the step's largest trusted norm (:func:`bound_correction`)."""
        self.created: list[int] = []
        """Workers whose model the latest :meth:`learn` created."""
        self.fit_errors: dict[int, tuple[float, float, int]] = {}
        """worker → ``(mse, mape, pairs)`` of the latest :meth:`learn`'s pairs under the model
        refitted on them (a training error, as the simulator's ``[CORRECTION]`` line reports;
        the held-out errors are in :attr:`history`)."""

    def ready(self, worker: int) -> bool:
        model = self.models.get(worker)
        return model is not None and model.n > 0

    def trusted(self, worker: int) -> bool:
        """Whether ``worker``'s model currently beats exclusion (the safeguard)."""
        score = self.score.get(worker)
        return score is not None and score[0] <= score[1]

    def predict(self, worker: int, y: Tensor, m: Tensor, max_norm: float = math.inf) -> Tensor:
        """The model's :math:`\\hat x` bounded by :func:`bound_correction` (norm at most
        ``max_norm``, ``m`` when not finite), or ``m`` when the safeguard says so."""
        if not self.trusted(worker):
            self.fallbacks += 1
            return m.clone()
        row, how = bound_correction(self.models[worker].predict(y, m), m, max_norm)
        self.fallbacks += how == "context"
        self.clipped += how == "clipped"
        return row

    def learn(
        self,
        step: int,
        pairs: list[tuple[int, Tensor, Tensor, Tensor]],
        max_norm: float = math.inf,
    ) -> list[int]:
        """Learn one step's pairs ``(worker, y, m, x)``: every pair is first scored with the
        model as it was before the step (one fit per worker and step; the prediction bounded
        by ``max_norm`` as :meth:`predict` bounds it), then learned. Pairs with a NaN/Inf, or
        that :meth:`RidgeCorrector.update` refuses, are neither (module docstring).

        Returns:
            the indices into ``pairs`` of the pairs learned.
        """
        usable = [i for i, (_, y, m, x) in enumerate(pairs) if all_finite(y, m, x)]
        for worker, y, m, x in (pairs[i] for i in usable):
            model = self.models.get(worker)
            if model is None or model.n == 0:
                continue
            pred, _ = bound_correction(model.predict(y, m), m, max_norm)
            mse, mape = prediction_errors(pred, x)
            raw_mse, raw_mape = prediction_errors(y, x)
            ex_mse, ex_mape = prediction_errors(m, x)
            self.history.append(
                {"step": float(step), "worker": float(worker), "mse": mse, "mape": mape,
                 "raw_mse": raw_mse, "raw_mape": raw_mape,
                 "exclude_mse": ex_mse, "exclude_mape": ex_mape}
            )
            if not (math.isfinite(mse) and math.isfinite(ex_mse)):
                continue  # an overflowing error would stay in the average for good
            old = self.score.get(worker, (mse, ex_mse))
            a = self.EMA
            self.score[worker] = ((1 - a) * old[0] + a * mse, (1 - a) * old[1] + a * ex_mse)
        self.created, self.fit_errors = [], {}
        learned = []
        for i in usable:
            worker, y, m, x = pairs[i]
            model = self.models.get(worker)
            if model is None:
                model = RidgeCorrector(self.dim, device=y.device, **self.kwargs)
            if not model.update(y, m, x):
                continue
            if worker not in self.models:
                self.models[worker] = model
                self.created.append(worker)
            learned.append(i)
        # training error under the refitted model; the fit is cached for the next predictions
        sums: dict[int, list[float]] = {}
        for worker, y, m, x in (pairs[i] for i in learned):
            mse, mape = prediction_errors(self.models[worker].predict(y, m), x)
            acc = sums.setdefault(worker, [0.0, 0.0, 0.0])
            acc[0] += mse
            acc[1] += mape
            acc[2] += 1
        self.fit_errors = {w: (a[0] / a[2], a[1] / a[2], int(a[2])) for w, a in sums.items()}
        return learned

    def state_dict(self) -> dict[str, Any]:
        """Every worker's model, the safeguard's scores, the error record and the counters."""
        return {"models": {w: m.state_dict() for w, m in self.models.items()},
                "score": dict(self.score), "history": [dict(r) for r in self.history],
                "fallbacks": self.fallbacks, "clipped": self.clipped}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict`'s output (the bank must have the same ``dim``)."""
        self.models = {}
        for worker, model_state in state["models"].items():
            model = RidgeCorrector(self.dim, device=device, **self.kwargs)
            model.load_state_dict(model_state)
            self.models[int(worker)] = model
        self.score = {int(w): (float(a), float(b)) for w, (a, b) in state["score"].items()}
        self.history = [dict(r) for r in state["history"]]
        self.fallbacks, self.clipped = int(state["fallbacks"]), int(state["clipped"])

    def summary(self, last: int | None = None) -> dict[str, float]:
        """Mean of each error over the last ``last`` scored pairs (all when ``None``)."""
        recs = self.history if last is None else self.history[-last:]
        if not recs:
            return {}
        return {k: sum(r[k] for r in recs) / len(recs) for k in self.KEYS}
