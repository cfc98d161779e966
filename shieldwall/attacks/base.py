"""The attack contract.

*Update attacks* are ``fn(honest: Tensor[h, d], num_byzantine: int, ctx: AttackContext,
**params) -> Tensor[num_byzantine, d]``: given the honest updates the attacker may see, return the
Byzantine rows. What ``honest`` holds is decided by the caller from the config: every honest
update of the round (omniscient) or only the updates the Byzantine workers computed honestly on
their own data. The rows then travel exactly the path honest rows travel.

*Data attacks* (label flipping, backdoors) act inside a Byzantine worker's local training:
``fn(x: Tensor, y: Tensor, ctx: AttackContext, **params) -> (x, y)``. They register with
``kind="data"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AttackContext"]


@dataclass
class AttackContext:
    """What an attacker knows besides the updates.

    Attributes:
        n: total number of rows the aggregator will see.
        f: number of Byzantine rows the defense is configured to tolerate.
        round: current round (0-based).
        generator: the attack's own seeded RNG (never the global one, so attacks do not perturb
            honest workers' randomness).
        reference: the current global parameters (flat), for attacks defined in weight space
            (FedML's ``zero``/``random``/``flip`` act on weights: update = weights - reference).
        aggregator: the configured defense as ``fn(updates, f) -> Tensor[d]``, for adaptive
            attacks that optimise against it; ``None`` when the attacker does not know it.
        num_classes: number of classes (data attacks).
        state: a dict the caller keeps for the whole run, for attacks with memory across
            rounds (mimic's warm-up); ``None`` where the caller keeps none.
    """

    n: int
    f: int
    round: int = 0
    generator: torch.Generator | None = None
    reference: Tensor | None = None
    aggregator: Callable[[Tensor, int], Tensor] | None = None
    num_classes: int | None = None
    state: dict | None = None
