"""Processes of one torch.distributed run must agree on what they built locally.

Every process of a multi-process run (torchrun, mpirun, BTARD peers) loads the data set and, for
text, trains or reads its own tokenizer. Rows stay the same length when two processes end up with
different vocabularies of the same size (another corpus, an edited cache, a different
``tokenizers`` version), so training would go on silently wrong. :func:`check_agreement` gathers
one fingerprint per process over the default process group and refuses the run with one line on
every process when they differ.
"""

from __future__ import annotations

import hashlib
from typing import Any

from shieldwall.config.loader import ConfigError

__all__ = ["check_agreement", "check_data_agreement"]


def check_agreement(what: str, value: str) -> None:
    """ConfigError on every rank unless all ranks of the default group pass the same ``value``.

    Each rank sends the SHA-256 of its value as a fixed 32-byte tensor: no rank unpickles or
    allocates anything another rank chose (``all_gather_object`` would run a hostile rank's
    pickle on every other one). Does nothing outside an initialised ``torch.distributed`` run.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    mine = torch.frombuffer(bytearray(hashlib.sha256(str(value).encode()).digest()),
                            dtype=torch.uint8)
    digests = [torch.zeros(32, dtype=torch.uint8) for _ in range(dist.get_world_size())]
    dist.all_gather(digests, mine)
    hexes = [bytes(d.tolist()).hex() for d in digests]
    differ = [r for r, h in enumerate(hexes) if h != hexes[0]]
    if differ:
        raise ConfigError(
            f"{what} differs between processes: rank 0 has {hexes[0][:16]}, rank(s) "
            f"{', '.join(map(str, differ))} {hexes[differ[0]][:16]} (SHA-256); give every "
            "process the same data and tokenizer cache (text_args.tokenizer_cache_dir)"
        )


def check_data_agreement(dataset: Any) -> None:
    """The tokenizer (vocabulary) fingerprint of a text data set is the same on every rank."""
    fingerprint = getattr(dataset, "extra", {}).get("tokenizer_fingerprint")
    if fingerprint is not None:
        check_agreement("the tokenizer (vocabulary)", fingerprint)
