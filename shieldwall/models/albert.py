"""ALBERT for masked language modelling (Lan et al. 2020), from Hugging Face ``transformers``.

``AlbertConfig`` + ``AlbertForMaskedLM``, randomly initialised from a config: nothing is
downloaded. Shapes are named (model names) and each dimension can be overridden by a
``text_args`` key (``embedding_size``, ``hidden_size``, ``num_hidden_layers``,
``num_attention_heads``, ``intermediate_size``, ``max_position_embeddings``):

============================  ====  =====  ======  =====  =====  ==========
model name                    E     H      layers  heads  FFN    parameters
============================  ====  =====  ======  =====  =====  ==========
``albert`` (``albert_tiny``)  64    128    2       2      256    ~0.4 M + V·E
``albert_base_v2``            128   768    12      12     3072   ~12 M (V = 30k)
``albert_large_v2``           128   1024   24      16     4096   ~18 M (V = 30k)
============================  ====  =====  ======  =====  =====  ==========

``albert_large_v2`` is the shape BTARD's ALBERT experiments train (dropout off, as in the v2
checkpoints). The vocabulary size V is the data set's (``num_classes``), the positions at least the
block length ``max_seq_length``. A model whose positions are fewer than the blocks' length is
refused with one line.

:class:`AlbertMLM` takes ``(N, L)`` int64 token ids and returns logits shaped ``(N, V, L)``, so the
library's ``F.cross_entropy(model(x), y)`` with ``(N, L)`` targets (``-100`` where nothing is
predicted) is exactly the masked-LM loss, in every algorithm and runtime unchanged. Padding
(id 0) is masked out of attention. The batched simulator does not batch this model (see
:attr:`AlbertMLM.unbatchable_reason`); the per-client loop runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from shieldwall.models import MODELS

__all__ = ["AlbertMLM", "ALBERT_SHAPES", "albert_config"]

#: Named shapes: embedding, hidden, layers, heads, feed-forward, positions.
ALBERT_SHAPES: dict[str, dict[str, int]] = {
    "albert_tiny": dict(embedding_size=64, hidden_size=128, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=256, max_position_embeddings=0),
    "albert_base_v2": dict(embedding_size=128, hidden_size=768, num_hidden_layers=12,
                           num_attention_heads=12, intermediate_size=3072,
                           max_position_embeddings=512),
    "albert_large_v2": dict(embedding_size=128, hidden_size=1024, num_hidden_layers=24,
                            num_attention_heads=16, intermediate_size=4096,
                            max_position_embeddings=512),
}


def albert_config(shape: str, seq_len: int, vocab_size: int, options: Any = None) -> Any:
    """The ``AlbertConfig`` of a named shape with ``text_args`` overrides, checked."""
    try:
        from transformers import AlbertConfig
    except ImportError:
        raise ValueError(
            "model albert needs the 'transformers' package (pip install -e \".[text]\")"
        ) from None
    dims = dict(ALBERT_SHAPES[shape])
    for key in dims:
        value = getattr(options, key, None) if options is not None else None
        if value is not None:
            if int(value) <= 0:
                raise ValueError(f"text_args.{key} must be positive, got {value}")
            dims[key] = int(value)
    if dims["max_position_embeddings"] == 0:
        dims["max_position_embeddings"] = seq_len
    if seq_len > dims["max_position_embeddings"]:
        raise ValueError(
            f"text_args.max_seq_length={seq_len} is longer than the model's "
            f"max_position_embeddings={dims['max_position_embeddings']}; shorten the blocks or "
            "raise text_args.max_position_embeddings"
        )
    if dims["hidden_size"] % dims["num_attention_heads"]:
        raise ValueError(
            f"text_args.hidden_size={dims['hidden_size']} is not a multiple of "
            f"num_attention_heads={dims['num_attention_heads']}"
        )
    return AlbertConfig(
        vocab_size=vocab_size, pad_token_id=0, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0, **dims,
    )


class AlbertMLM(nn.Module):
    """``AlbertForMaskedLM`` with logits laid out ``(N, V, L)`` for ``F.cross_entropy``."""

    unbatchable_reason = (
        "ALBERT takes integer token ids and token-level targets, which the batched kernels "
        "(float inputs, one label per sample) do not handle"
    )

    def __init__(self, config: Any, pad_id: int = 0) -> None:
        super().__init__()
        from transformers import AlbertForMaskedLM

        self.config = config
        self.pad_id = pad_id
        self.mlm = AlbertForMaskedLM(config)

    def forward(self, input_ids: Tensor) -> Tensor:
        if input_ids.dtype.is_floating_point:
            raise ValueError("AlbertMLM takes integer token ids")
        if input_ids.shape[-1] > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {input_ids.shape[-1]} tokens is longer than the model's "
                f"max_position_embeddings={self.config.max_position_embeddings}"
            )
        attention = (input_ids != self.pad_id).long()
        out = self.mlm(input_ids=input_ids, attention_mask=attention)
        return out.logits.transpose(1, 2)


def _register(name: str, shape: str, aliases: tuple[str, ...]) -> None:
    def build(input_shape: Sequence[int], num_classes: int, options: Any = None) -> AlbertMLM:
        if len(input_shape) != 1:
            raise ValueError(
                f"model {name!r} needs token blocks shaped (sequence length,), got "
                f"{tuple(input_shape)}; use a text data set (pydoc_topics, wikitext2, wikitext103)"
            )
        return AlbertMLM(albert_config(shape, int(input_shape[0]), num_classes, options))

    build.__doc__ = f"ALBERT masked LM, shape {shape} (see module docstring)."
    MODELS.add(name, build, aliases=aliases, options=True, text=True)


_register("albert", "albert_tiny", ("albert_tiny", "tiny_albert"))
_register("albert_base_v2", "albert_base_v2", ("albert-base-v2", "albert_base"))
_register("albert_large_v2", "albert_large_v2", ("albert-large-v2", "albert_large"))
