"""Sign flipping: send the negated (and optionally scaled) own honest gradient.

:math:`b_j = -s \\cdot g_{j \\bmod h}` with scale :math:`s` (default 1), the sign-flipping attack
of e.g. Damaskinos et al. 2018 ("Asynchronous Byzantine machine learning") and Li et al. 2019
("RSA: Byzantine-robust stochastic aggregation methods"). It needs only the attacker's own honest
update (``omniscient=False``). ByzFL's ``SignFlipping`` negates the *mean* of the vectors it is
given (in its framework, every honest update of the round), which is this attack when given only
the attacker's own update. With ``scale=1`` it coincides with FedML's ``flip`` (see
:mod:`.fedml_byzantine`); ByzShield's ``rev_grad`` is the ``scale=100`` case (:mod:`.byzshield`).
"""

from __future__ import annotations

from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks._utils import check_honest, own_rows
from shieldwall.attacks.base import AttackContext

__all__ = ["sign_flip"]


@ATTACKS.register(
    "sign_flip", aliases=("signflip", "sign_flipping"), kind="update", omniscient=False
)
def sign_flip(
    honest: Tensor, num_byzantine: int, ctx: AttackContext, *, scale: float = 1.0
) -> Tensor:
    """``-scale · honest[i % h]`` for Byzantine row ``i``.

    Args:
        honest: ``(h, d)``, the attacker's own honest updates first.
        num_byzantine: rows to return.
        ctx: unused.
        scale: non-negative multiplier of the flipped gradient (default 1).
    """
    check_honest(honest, num_byzantine, "sign_flip")
    return own_rows(honest, num_byzantine) * (-scale)
