"""Who attacks and when: the Byzantine set of a round and the attack's active window.

* :func:`byzantine_ids` — the ``num_byzantine`` Byzantine clients among ``num_clients``. With
  ``redraw=False`` the set is drawn once from ``seed`` and is the same every round (the usual
  setting: a fixed set of compromised machines); with ``redraw=True`` it is re-drawn every round
  from ``(seed, round)`` (ByzShield/DETOX's ``byzantine_gen="random"``, which draws a fresh set
  per iteration). Either way it is a pure function of its arguments: no global RNG is read or
  advanced, and any process computes the same set.
* :func:`attack_active` — whether the attack runs in a round: the closed window
  ``[attack_start, attack_end]`` (both inclusive, as ``attack_args.attack_start``/``attack_end``
  are documented in the config schema; ``attack_end=None``: until the end of training). Outside
  the window the Byzantine workers behave honestly.

Draws use ``numpy.random.default_rng`` seeded with the integers above (hashed by NumPy's
``SeedSequence``, so nearby seeds and rounds give unrelated sets); results are the same on every
platform for a given NumPy version.
"""

from __future__ import annotations

import numpy as np

__all__ = ["byzantine_ids", "attack_active"]


def byzantine_ids(
    num_clients: int, num_byzantine: int, round: int, *, seed: int, redraw: bool
) -> list[int]:
    """Sorted ids (in ``[0, num_clients)``) of the Byzantine clients in ``round``.

    Args:
        num_clients: total number of clients.
        num_byzantine: how many are Byzantine (0 ≤ num_byzantine ≤ num_clients).
        round: the round (0-based); ignored unless ``redraw``.
        seed: non-negative seed of the draw.
        redraw: ``False``: one set for the whole run, drawn from ``seed``; ``True``: a new set
            each round, drawn from ``(seed, round)``.
    """
    if num_clients < 0:
        raise ValueError(f"num_clients must be >= 0, got {num_clients}")
    if not 0 <= num_byzantine <= num_clients:
        raise ValueError(
            f"num_byzantine must be in [0, num_clients={num_clients}], got {num_byzantine}"
        )
    if round < 0:
        raise ValueError(f"round must be >= 0, got {round}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    entropy = [int(seed), int(round)] if redraw else [int(seed)]
    rng = np.random.default_rng(entropy)
    chosen = rng.choice(num_clients, size=num_byzantine, replace=False)
    return sorted(int(i) for i in chosen)


def attack_active(round: int, attack_start: int = 0, attack_end: int | None = None) -> bool:
    """``attack_start <= round <= attack_end`` (no upper bound when ``attack_end`` is None)."""
    if round < attack_start:
        return False
    return attack_end is None or round <= attack_end
