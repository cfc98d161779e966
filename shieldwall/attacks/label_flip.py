"""Label flipping: a data attack run inside a Byzantine worker's local training.

Default mapping (e.g. Fang et al. 2020, "Local model poisoning attacks to Byzantine-robust
federated learning"; Tolpegin et al. 2020, "Data poisoning attacks against federated learning
systems"): every label y becomes :math:`C - 1 - y` with C = ``ctx.num_classes``.

FedML's ``label_flipping`` attack instead takes two lists of equal length,
``original_class_list`` and ``target_class_list``, and maps ``original_class_list[k]`` to
``target_class_list[k]``; labels not listed are kept. The mapping is applied simultaneously
(``[0, 1] → [1, 0]`` swaps the two classes). Every sample of the batch is relabelled; which
workers and rounds attack is decided by the caller (:mod:`.schedule`).

Masked language modelling (token-level targets ``y`` of shape ``(N, L)``, ``-100`` where no
token is predicted): as in BTARD's ALBERT experiments (``LabelFlippingAlbert`` in
yandex-research/btard), every predicted token's target becomes the next id,
:math:`(y + 1) \bmod C` with C the vocabulary size, so the worker consistently trains the model to
predict a wrong token at every masked position; ``-100`` positions and the input tokens are kept.
FedML's lists, when given, map token ids instead.

Data attacks take ``(x, y, ctx, **params)`` and return ``(x, y)``: here ``x`` is returned as is
(not copied, never modified) and ``y`` is a new tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from shieldwall.attacks import ATTACKS
from shieldwall.attacks.base import AttackContext

__all__ = ["label_flip"]

IGNORE_INDEX = -100


def _check_labels(y: Tensor) -> None:
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype.is_complex:
        raise ValueError("label_flip: y must be an integer label tensor")


@ATTACKS.register(
    "label_flip", aliases=("label_flipping", "labelflip"), kind="data", omniscient=False
)
def label_flip(
    x: Tensor,
    y: Tensor,
    ctx: AttackContext,
    *,
    original_class_list: Sequence[int] | None = None,
    target_class_list: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Relabel every sample: ``C − 1 − y``, or FedML's ``original → target`` lists.

    Args:
        x: inputs, returned unchanged.
        y: integer labels in ``[0, C)``.
        ctx: ``ctx.num_classes`` (C) is required for the default mapping.
        original_class_list: classes to relabel (FedML's key); with ``target_class_list``.
        target_class_list: their new labels, same length.
    """
    _check_labels(y)
    if y.dim() > 1:  # token-level targets (masked LM): flip only the predicted positions
        ignored = y == IGNORE_INDEX
        kept = y.masked_fill(ignored, 0)
        if original_class_list is None:
            if ctx.num_classes is None:
                raise ValueError("label_flip: token targets need ctx.num_classes (vocabulary)")
            flipped = (kept + 1) % ctx.num_classes
        else:
            _, flipped = label_flip(x, kept.reshape(-1), ctx,
                                    original_class_list=original_class_list,
                                    target_class_list=target_class_list)
        return x, flipped.view_as(y).masked_fill(ignored, IGNORE_INDEX)
    if (original_class_list is None) != (target_class_list is None):
        raise ValueError(
            "label_flip: give both original_class_list and target_class_list, or neither"
        )
    if original_class_list is None:
        if ctx.num_classes is None:
            raise ValueError("label_flip: the default mapping C - 1 - y needs ctx.num_classes")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= ctx.num_classes):
            raise ValueError(f"label_flip: labels must lie in [0, {ctx.num_classes})")
        return x, (ctx.num_classes - 1) - y
    originals = [int(c) for c in original_class_list]
    targets = [int(c) for c in target_class_list]  # type: ignore[union-attr]
    if len(originals) != len(targets):
        raise ValueError(
            f"label_flip: original_class_list ({len(originals)}) and target_class_list "
            f"({len(targets)}) must have the same length"
        )
    if len(set(originals)) != len(originals):
        raise ValueError(f"label_flip: original_class_list has repeated classes: {originals}")
    if any(c < 0 for c in originals + targets):
        raise ValueError("label_flip: class indices must be >= 0")
    if y.numel() == 0 or not originals:
        return x, y.clone()
    size = max(int(y.max()) + 1, max(originals) + 1)
    table = torch.arange(size, dtype=y.dtype, device=y.device)
    table[torch.tensor(originals, device=y.device)] = torch.tensor(
        targets, dtype=y.dtype, device=y.device
    )
    return x, table[y]
