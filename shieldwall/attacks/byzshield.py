"""ByzShield's gradient attacks (Konstantinidis & Ramamoorthy 2021, "ByzShield: An efficient
and robust system for distributed training", MLSys; also DETOX, Rajput et al. 2019).

The reference code (``src/model_ops/utils.py``, ``err_simulation``) defines, with
``ADVERSARY_ = -100`` and ``CONST_ = -100``:

* ``rev_grad``: :math:`b = -100 \\cdot g` — the worker's own gradient reversed and amplified a
  hundred-fold;
* ``constant``: :math:`b = -100 \\cdot \\mathbf{1}` — every coordinate equal to −100, whatever
  the gradient.

(ByzShield's ``cyclic`` variants add the honest gradient back, for its cyclic-code baseline; not
reproduced here.) Neither attack needs other workers' updates (``omniscient=False``).
"""

from __future__ import annotations

from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._utils import check_honest, own_rows
from shieldwall.attacks.base import AttackContext

__all__ = ["reversed_gradient", "constant", "BYZSHIELD_REV_GRAD_SCALE", "BYZSHIELD_CONSTANT"]

#: ByzShield's ``ADVERSARY_``: ``rev_grad`` sends ``-100 · g``.
BYZSHIELD_REV_GRAD_SCALE: float = 100.0
#: ByzShield's ``CONST_``: ``constant`` sends ``-100`` in every coordinate.
BYZSHIELD_CONSTANT: float = -100.0


@ATTACKS.register(
    "reversed_gradient", aliases=("rev_grad", "reverse"), kind="update", omniscient=False
)
def reversed_gradient(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    scale: float = BYZSHIELD_REV_GRAD_SCALE,
) -> Tensor:
    """ByzShield ``rev_grad``: ``-scale · honest[i % h]`` (default scale 100).

    Args:
        honest: ``(h, d)``, the attacker's own honest updates first.
        num_byzantine: rows to return.
        ctx: unused.
        scale: amplification of the reversed gradient (ByzShield: 100).
    """
    check_honest(honest, num_byzantine, "reversed_gradient")
    return own_rows(honest, num_byzantine) * (-scale)


@ATTACKS.register("constant", aliases=("const",), kind="update", omniscient=False)
def constant(
    honest: Tensor,
    num_byzantine: int,
    ctx: AttackContext,
    *,
    value: float = BYZSHIELD_CONSTANT,
) -> Tensor:
    """ByzShield ``constant``: every coordinate equals ``value`` (default −100).

    Args:
        honest: ``(h, d)``; only its shape, dtype and device are used.
        num_byzantine: rows to return.
        ctx: unused.
        value: the constant (ByzShield: −100).
    """
    check_honest(honest, num_byzantine, "constant")
    return honest.new_full((num_byzantine, honest.shape[1]), value)
