r"""Masked-LM examples as BERT and ALBERT make them: fixed-length blocks, 15% masked, 80/10/10.

**Blocks.** Each document's token ids are cut, in order, into pieces of :math:`L - 2` tokens and
framed as ``[CLS] piece [SEP]``; a document's last, shorter piece is padded with ``[PAD]`` (the
model's attention ignores padding) and dropped when it has fewer than ``min_tokens`` tokens.
Every block remembers its document, for the ``document`` partition.

**Masking** (Devlin et al. 2019, §3.1 and App. A.1; ALBERT keeps it): each non-special token is
selected with probability :math:`p` (``mlm_probability``, 0.15); a selected token is replaced by
``[MASK]`` with probability 0.8, by a token drawn uniformly from the non-special vocabulary with
probability 0.1, and kept with probability 0.1. The targets are the original ids at selected
positions and ``-100`` (PyTorch's ``ignore_index``) elsewhere, so
``F.cross_entropy(logits_NVL, targets_NL)`` is the masked-LM loss averaged over selected tokens.
A block with no selected token gets one selected position drawn uniformly (so no batch is
without targets). Masks are drawn once per copy (BERT's static masking with ``dupe_factor``
copies); the draws come from a seeded generator, so a seed gives the same examples everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["IGNORE_INDEX", "make_blocks", "mask_tokens"]

IGNORE_INDEX = -100


def make_blocks(
    docs: Sequence[Sequence[int]], seq_len: int, *, cls_id: int, sep_id: int, pad_id: int,
    min_tokens: int = 8,
) -> tuple[Tensor, Tensor]:
    """``(blocks (B, seq_len) int64, document id per block (B,) int64)`` from token-id lists."""
    if seq_len < 3:
        raise ValueError(f"text_args.max_seq_length must be at least 3, got {seq_len}")
    body = seq_len - 2
    rows: list[list[int]] = []
    groups: list[int] = []
    for d, ids in enumerate(docs):
        for start in range(0, len(ids), body):
            piece = list(ids[start : start + body])
            if len(piece) < min(min_tokens, body):
                continue
            row = [cls_id, *piece, sep_id]
            rows.append(row + [pad_id] * (seq_len - len(row)))
            groups.append(d)
    if not rows:
        return torch.zeros(0, seq_len, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.tensor(rows, dtype=torch.int64), torch.tensor(groups, dtype=torch.int64)


def mask_tokens(
    blocks: Tensor, *, vocab_size: int, num_special: int, mask_id: int,
    probability: float = 0.15, generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking of ``blocks`` ``(B, L)``: ``(inputs, targets)`` (see module docstring).

    Ids below ``num_special`` (padding, ``[CLS]``, ``[SEP]``…) are never selected; random
    replacements are drawn from ``[num_special, vocab_size)``.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"text_args.mlm_probability must lie in (0, 1), got {probability}")
    if vocab_size <= num_special:
        raise ValueError(f"vocab_size {vocab_size} leaves no ordinary tokens")
    gen = generator
    candidate = blocks >= num_special
    selected = (torch.rand(blocks.shape, generator=gen) < probability) & candidate
    # A block without a selected token gets one, uniformly among its candidates.
    empty = ~selected.any(dim=1) & candidate.any(dim=1)
    if bool(empty.any()):
        scores = torch.rand(blocks.shape, generator=gen).masked_fill(~candidate, -1.0)
        pick = scores.argmax(dim=1)
        rows = torch.nonzero(empty).squeeze(1)
        selected[rows, pick[rows]] = True
    targets = torch.where(selected, blocks, torch.full_like(blocks, IGNORE_INDEX))
    roll = torch.rand(blocks.shape, generator=gen)
    to_mask = selected & (roll < 0.8)
    to_random = selected & (roll >= 0.8) & (roll < 0.9)
    random_ids = torch.randint(num_special, vocab_size, blocks.shape, generator=gen)
    inputs = blocks.clone()
    inputs[to_mask] = mask_id
    inputs[to_random] = random_ids[to_random]
    return inputs, targets
