r"""ButterflyClip numerics: part splitting, CenteredClip to a verifiable fixed point, checksums.

BTARD (Gorbunov et al., ICML 2022, Sec. 3, the ButterflyClip procedure) splits every
peer's gradient :math:`g_i \in \mathbb{R}^d` into :math:`n` contiguous parts
:math:`g_i(1), \dots, g_i(n)`; peer :math:`j` aggregates part :math:`j` of every peer with
CenteredClip and the full aggregate is the concatenation of the per-part results:

.. math::
    \hat g(j) = \mathrm{CC}_\tau\bigl(g_1(j), \dots, g_n(j)\bigr), \qquad
    \hat g = \bigl(\hat g(1), \dots, \hat g(n)\bigr).

CenteredClip's result :math:`v` is a fixed point of
:math:`v \mapsto v + \frac1n \sum_i \mathrm{clip}_\tau(x_i - v)`, i.e.

.. math::
    \sum_i \mathrm{clip}_\tau(x_i - v) = 0, \qquad
    \mathrm{clip}_\tau(u) = u \min\bigl(1, \tau / \|u\|_2\bigr).

That equation is what the other peers verify (Sec. 3, verification of CenteredClip): with a
shared random direction :math:`z` each peer :math:`i` publishes
:math:`s_i^j = \langle z(j), \mathrm{clip}_\tau(g_i(j) - \hat g(j)) \rangle` and everyone checks
:math:`|\sum_i s_i^j| \le \kappa \rho_j`. Since :math:`\langle z, r\rangle \sim
\mathcal N(0, \|r\|^2)` for :math:`z \sim \mathcal N(0, I)`, an honest aggregator whose residual
:math:`r = \sum_i \mathrm{clip}_\tau(x_i - v)` has :math:`\|r\| \le \rho_j` passes with
probability :math:`P(|\mathcal N(0,1)| \le \kappa)` (:math:`1 - 10^{-15}` for
:math:`\kappa = 8`), while a result moved by :math:`\delta \gg \tau` leaves a residual of norm
about :math:`n\tau` and fails.

CenteredClip is clipped by the L2 norm of each part, so the per-part aggregate differs in general
from CenteredClip of the whole vectors; the two agree with one part, or when no row is clipped in
either (then both are the mean). The tolerance :math:`\rho_j = n_j(\epsilon\tau +
1.2\cdot10^{-7}\|\hat g(j)\|)` allows for the solver's stopping rule (relative ``rel_tol``
:math:`=\epsilon`) and for rounding the float64 solution to the float32 part that is sent.

The solver: the registered ``centered_clip`` aggregator (Karimireddy et al.'s fixed-step
iteration, ``iterations`` steps from the coordinate-wise median) when available, then
iteratively re-weighted averaging :math:`v \leftarrow \sum_i w_i x_i / \sum_i w_i`,
:math:`w_i = \min(1, \tau/\|x_i - v\|)` — a majorise–minimise method for the convex Huber-type
objective whose stationary points are exactly the fixed points above — until :math:`\|r\|` is
below the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ClipResult",
    "split_sizes",
    "split_parts",
    "assemble",
    "clip_residual",
    "residual_tolerance",
    "part_norm",
    "norm_matches",
    "centered_clip_fixed_point",
    "checksum",
    "checksum_tolerance",
    "butterfly_clip",
    "FLOAT32_ROUNDING",
]

#: Relative rounding error of float32 (half an ulp, with margin): sending a float64 solution as
#: float32 moves it by at most this times its norm.
FLOAT32_ROUNDING = 1.2e-7


@dataclass
class ClipResult:
    """A part's CenteredClip solution.

    Attributes:
        vector: the fixed point, in the rows' dtype (what the aggregator sends).
        iterations: solver iterations run (warm start plus re-weighting).
        residual_norm: :math:`\\|\\sum_i \\mathrm{clip}_\\tau(x_i - v)\\|` at ``vector``.
        num_clipped: rows farther than ``tau`` from ``vector``.
    """

    vector: Tensor
    iterations: int
    residual_norm: float
    num_clipped: int


def split_sizes(d: int, n: int) -> list[int]:
    """Lengths of the ``n`` contiguous parts of a length-``d`` vector (first ``d % n`` longer)."""
    if n < 1:
        raise ValueError(f"need at least one part, got n={n}")
    base, extra = divmod(d, n)
    return [base + (1 if j < extra else 0) for j in range(n)]


def split_parts(vector: Tensor, n: int) -> list[Tensor]:
    """``vector`` cut into ``n`` contiguous parts (views), sizes from :func:`split_sizes`."""
    return list(torch.split(vector.reshape(-1), split_sizes(vector.numel(), n)))


def assemble(parts: list[Tensor]) -> Tensor:
    """The full vector from its parts (inverse of :func:`split_parts`)."""
    return torch.cat([p.reshape(-1) for p in parts])


def _weights(rows64: Tensor, v64: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    diff = rows64 - v64
    dist = torch.linalg.vector_norm(diff, dim=1)
    w = (tau / dist.clamp_min(1e-300)).clamp_max(1.0)
    return diff, w


def clip_residual(rows: Tensor, v: Tensor, tau: float) -> Tensor:
    """:math:`\\sum_i \\mathrm{clip}_\\tau(x_i - v)` in float64 (zero at CenteredClip's fixed
    point)."""
    diff, w = _weights(rows.double(), v.double(), tau)
    return w @ diff


def residual_tolerance(
    num_rows: int, tau: float, result_norm: float, rel_tol: float,
    row_norm_bound: float = float("inf"),
) -> float:
    """:math:`\\rho = n(\\epsilon\\tau + 1.2\\cdot 10^{-7}\\min(\\|v\\|, M))`: the residual an
    honest aggregator guarantees at the float32 result it sends.

    ``row_norm_bound`` :math:`M` is the largest norm of the included rows (committed by their
    senders): CenteredClip's result is a weighted mean of the rows, so an honest :math:`\\|v\\|`
    never exceeds it, while the rounding term must not grow with a norm the aggregator picks
    (a result of norm :math:`\\gtrsim 10^7\\tau` would pass any check)."""
    return num_rows * (rel_tol * tau + FLOAT32_ROUNDING * min(result_norm, row_norm_bound))


def part_norm(t: Tensor) -> float:
    """:math:`\\|t\\|_2` in float64, as committed for each gradient part."""
    return float(torch.linalg.vector_norm(t.double()))


def norm_matches(t: Tensor, claimed: float) -> bool:
    """Whether ``t``'s norm is the ``claimed`` one (up to float64 summation order)."""
    norm = part_norm(t)
    return abs(norm - claimed) <= 1e-6 * (1.0 + norm)


def _warm_start(rows: Tensor, tau: float, iterations: int) -> Tensor:
    """The registered CenteredClip (fixed-step iteration) from the median, or the median."""
    from shieldwall.aggregators import AGGREGATORS

    if iterations > 0 and "centered_clip" in AGGREGATORS:
        fn = AGGREGATORS.get("centered_clip")
        return fn(rows, 0, tau=tau, iterations=iterations).double()
    return rows.double().median(dim=0).values


def centered_clip_fixed_point(
    rows: Tensor,
    tau: float,
    *,
    iterations: int = 5,
    rel_tol: float = 1e-4,
    max_iterations: int = 1000,
) -> ClipResult:
    """CenteredClip of ``rows`` (``(n, d)``) solved until the consistency check will pass.

    Args:
        rows: one part from every included peer.
        tau: clipping radius.
        iterations: steps of the registered fixed-step CenteredClip used as the warm start.
        rel_tol: the solver stops once the residual at the float32 result is at most half of
            :func:`residual_tolerance` (the other half absorbs rounding).
        max_iterations: cap on re-weighting steps (reached only for degenerate inputs).
    """
    if rows.dim() != 2 or rows.shape[0] < 1:
        raise ValueError(f"rows must have shape (n, d) with n >= 1, got {tuple(rows.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    x = rows.double()
    n = x.shape[0]
    sq = (x * x).sum(dim=1)
    bound = float(sq.max().sqrt())  # the largest row norm (what the senders commit to)
    v = _warm_start(rows, tau, iterations)
    done, exact = 0, False
    for done in range(1, max_iterations + 1):  # noqa: B007 - `done` is reported
        if exact:  # differences formed explicitly: accurate however close the rows are
            diff, w = _weights(x, v, tau)
            residual = w @ diff
        else:  # ||x_i - v||^2 = ||x_i||^2 - 2 x_i.v + ||v||^2: two matrix-vector products
            d2 = (sq - 2.0 * (x @ v) + v @ v).clamp_min(0.0)
            w = (tau / d2.sqrt().clamp_min(1e-300)).clamp_max(1.0)
            residual = w @ x - w.sum() * v
        out = v.to(rows.dtype)
        limit = 0.5 * residual_tolerance(
            n, tau, float(torch.linalg.vector_norm(out)), rel_tol, bound
        )
        if float(torch.linalg.vector_norm(residual)) <= limit:
            if exact or float(clip_residual(rows, out, tau).norm()) <= limit:
                break
            exact = True  # the fast form was not accurate enough here: finish exactly
            continue
        v = v + residual / w.sum()  # = sum_i w_i x_i / sum_i w_i (IRLS step)
    out = v.to(rows.dtype)
    diff = x - out.double()
    dist = torch.linalg.vector_norm(diff, dim=1)
    final = (tau / dist.clamp_min(1e-300)).clamp_max(1.0) @ diff
    return ClipResult(
        out, iterations + done, float(torch.linalg.vector_norm(final)), int((dist > tau).sum())
    )


def checksum(part: Tensor, result: Tensor, z: Tensor, tau: float) -> float:
    """:math:`s = \\langle z, \\mathrm{clip}_\\tau(x - \\hat g)\\rangle` in float64."""
    diff = part.double() - result.double()
    norm = float(torch.linalg.vector_norm(diff))
    scale = 1.0 if norm <= tau else tau / norm
    return scale * float(z.double() @ diff)


def checksum_tolerance(value: float, z: Tensor, tau: float) -> float:
    """How far a recomputed checksum may differ from a published one (float64 round-off)."""
    return 1e-9 * (abs(value) + tau * float(torch.linalg.vector_norm(z.double())))


def butterfly_clip(
    grads: Tensor, tau: float, *, iterations: int = 5, rel_tol: float = 1e-4
) -> Tensor:
    """Reference ButterflyClip in one place: CenteredClip of each part over all rows of
    ``grads`` (``(n, d)``, ``n`` parts), concatenated."""
    n = grads.shape[0]
    columns = split_sizes(grads.shape[1], n)
    parts = torch.split(grads, columns, dim=1)
    return assemble(
        [
            centered_clip_fixed_point(p, tau, iterations=iterations, rel_tol=rel_tol).vector
            for p in parts
        ]
    )
