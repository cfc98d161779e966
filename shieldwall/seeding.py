"""Deterministic, position-derived randomness.

Every random choice in a run (a client's batches in a round, the clients sampled in a round, an
attack's noise) draws from a generator seeded by ``derive_seed(seed, *coordinates)``. Nothing
depends on how many numbers were drawn before, so a resumed run, a run on another runtime, and a
run whose clients execute in another order all see the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["derive_seed", "torch_generator", "numpy_generator", "shared_dropout_rng"]


_TAG_WORDS: dict[int, str] = {}
"""32-bit word → the string tag that produced it (see :func:`derive_seed`)."""


def _tag_word(tag: str) -> int:
    """A string tag's word: its first 4 bytes, as every seed drawn so far has used. Two tags that
    share them would give identical streams (``"redundant-batch"`` and ``"redundant-attack"``
    once did), so a second tag with a word already taken raises instead."""
    word = int.from_bytes(tag.encode()[:4].ljust(4, b"\0"), "little")
    owner = _TAG_WORDS.setdefault(word, tag)
    if owner != tag:
        raise ValueError(
            f"seed tags {owner!r} and {tag!r} share their first 4 bytes, so their random streams "
            "would be identical; give one of them a different start"
        )
    return word


def derive_seed(seed: int, *coordinates: int | str) -> int:
    """A 63-bit seed mixed from ``seed`` and ``coordinates`` (e.g. a purpose tag, round, client).

    A string tag counts by its first 4 bytes (:func:`_tag_word`); tags must differ there.
    """
    words = [int(seed) & 0xFFFFFFFF]
    for c in coordinates:
        words.append(_tag_word(c) if isinstance(c, str) else int(c) & 0xFFFFFFFF)
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def torch_generator(seed: int, *coordinates: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *coordinates))


def numpy_generator(seed: int, *coordinates: int | str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *coordinates))


@contextlib.contextmanager
def shared_dropout_rng(
    seed: int, round: int, period: int, device: torch.device | None = None
) -> Iterator[None]:
    """Seed the global RNG (which dropout draws from) by ``(seed, round // period)`` inside the
    block and restore it afterwards; ``period`` 0 leaves the global RNG alone.

    Every client run inside this block in one round draws the same dropout masks, redrawn every
    ``period`` rounds (``train_args.shared_dropout_rounds``), as the bucketing paper's simulator
    does by restoring the global RNG after each worker.
    """
    if not period:
        yield
        return
    cuda = [device.index or 0] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(derive_seed(seed, "dropout", round // period))
        yield
