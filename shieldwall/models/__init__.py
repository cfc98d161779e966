"""Models, chosen by name: ``fn(input_shape, num_classes) -> nn.Module`` in :data:`MODELS`.

Names are case-insensitive and accept FedML's and ByzShield's spellings (``lr``, ``LeNet``,
``ResNet18``, ``VGG13``, ``DenseNet``…).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from shieldwall.registry import Registry, import_submodules

__all__ = ["MODELS", "build_model"]

MODELS: Registry = Registry("model")


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, options: Any = None, *,
    text: bool = False,
) -> nn.Module:
    """Instantiate the registered model ``name`` for inputs of ``input_shape`` (no batch dim).

    ``options`` (the config's ``text_args``) reaches models registered with ``options=True``;
    ``text`` says the data are token blocks with token-level targets, which only models
    registered with ``text=True`` take (ValueError naming them otherwise).
    """
    entry = MODELS.entry(name)
    if text and not entry.meta.get("text"):
        takes = ", ".join(e.name for e in MODELS if e.meta.get("text"))
        raise ValueError(
            f"model_args.model: {entry.name!r} does not model text (token ids with token-level "
            f"targets); text data sets take: {takes}"
        )
    if entry.meta.get("options"):
        return entry.obj(tuple(input_shape), num_classes, options=options)
    return entry.obj(tuple(input_shape), num_classes)


import_submodules(__name__)
