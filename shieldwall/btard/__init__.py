r"""BTARD-SGD: verified decentralised training with ButterflyClip, validators and banning.

E. Gorbunov, A. Borzunov, M. Diskin, M. Ryabinin, "Secure Distributed Training at Scale",
ICML 2022 (arXiv:2106.11257). There is no server: :math:`n` peers, fewer than half of them
Byzantine, each compute a gradient on a batch drawn from a public seed, then

* aggregate it with a **butterfly all-reduce** where peer :math:`j` runs CenteredClip on part
  :math:`j` of everyone's gradient (ButterflyClip, :mod:`.clip`);
* **commit** to everything with hashes before sending it, and draw the step's random choices with
  a commit–reveal **MPRNG** (:mod:`.crypto`);
* **check** every aggregated part (the CenteredClip fixed-point equation along a shared random
  direction) and let randomly drawn **validators** recompute peers' gradients (:mod:`.peer`);
* turn every failed check into an **accusation** with signed evidence that every peer can verify;
  a proven accusation bans the culprit, a false one the accuser (:mod:`.judge`).

Modules: :mod:`.clip` (numerics), :mod:`.crypto` (hashes, signatures, MPRNG), :mod:`.messages`,
:mod:`.wire` (safe serialisation), :mod:`.transport` (in-memory and torch.distributed),
:mod:`.byzantine` (attacks), :mod:`.peer` (one peer's phases), :mod:`.judge` (verdicts),
:mod:`.protocol` (one step), :mod:`.run` (the driver behind ``shieldwall run``),
:mod:`.launch` (local multi-process runs). BTARD is not an
:class:`~shieldwall.algorithms.base.Algorithm` (it has no server half) and is not registered in
``ALGORITHMS``; ``train_args.federated_optimizer: BTARD`` dispatches to :func:`run_btard`.
See ``docs/btard.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shieldwall.config import ExperimentConfig

__all__ = ["run_btard"]


def run_btard(cfg: ExperimentConfig, resume: str | Path | None = None) -> dict[str, Any]:
    """See :func:`shieldwall.btard.run.run_btard` (imported on first use)."""
    from shieldwall.btard.run import run_btard as _run

    return _run(cfg, resume)
