"""Post-aggregation steps: ``fn(aggregate: Tensor[d], *, reference, generator, round, **params)``.

A post-aggregation step transforms the aggregated update *after* the aggregator ran, before the
algorithm's server half moves the global state (FedML's ``defend_after_aggregation``): CRFL clips
the new global model and perturbs it, weak DP adds Gaussian noise. Chained in the order
``defense_args.postaggregators`` (or a FedML defense name) lists them; see
:func:`postaggregate_chain`.

Arguments every step receives:

* ``aggregate`` — the aggregated update, shape ``(d,)`` (never modified in place);
* ``reference`` — the current global parameters when updates are model deltas (FedAvg), so that
  ``reference + server_lr · aggregate`` is the next global model; ``None`` for gradients;
* ``generator`` — a :class:`torch.Generator` seeded from ``(seed, "defense", round, position)``:
  steps never touch the global RNG, so runs are reproducible and resumable;
* ``round`` — the round (0-based), for schedules such as CRFL's growing clipping threshold.

Steps that depend on these names list them in their signature; the registry's parameter check
treats them as supplied by the server, never by the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from shieldwall.registry import Registry, import_submodules
from shieldwall.seeding import torch_generator

__all__ = ["POSTAGGREGATORS", "SUPPLIED", "postaggregate_chain"]

POSTAGGREGATORS: Registry = Registry("post-aggregator")

#: Keyword arguments the server supplies to every post-aggregation step (not config keys).
SUPPLIED = frozenset({"reference", "generator", "round"})


def postaggregate_chain(
    aggregate: Tensor,
    steps: Sequence[tuple[str, dict[str, Any]]],
    *,
    reference: Tensor | None = None,
    seed: int = 0,
    round: int = 0,
) -> Tensor:
    """Apply each ``(name, params)`` step in order to ``aggregate``; returns a new vector."""
    for position, (name, params) in enumerate(steps):
        entry = POSTAGGREGATORS.entry(name)
        generator = torch_generator(seed, "defense", round, position)
        aggregate = entry.obj(
            aggregate, reference=reference, generator=generator, round=round, **params
        )
    return aggregate


import_submodules(__name__)
