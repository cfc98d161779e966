"""Tokenizers for the text data sets, trained locally and cached; never fetched from a hub.

Three kinds (``text_args.tokenizer``):

* ``wordpiece``: BERT's WordPiece (lower-cased, accents stripped, split on white space and
  punctuation), trained with the ``tokenizers`` package's ``WordPieceTrainer`` on the training
  split;
* ``bpe``: byte-level BPE (GPT-2/RoBERTa style), trained with ``BpeTrainer`` on the bytes of the
  training split; every string round-trips exactly;
* ``byte``: no training, one id per byte (plus the special tokens); round-trips exactly.

Every vocabulary starts with the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` at ids 0–4.

A trained tokenizer is cached as ``<cache>/<dataset>-<kind>-<vocab>-<key>.json`` with
``key`` = SHA-256 of the training text and the settings, and a ``.meta.json`` beside it holding the
key and the SHA-256 of the tokenizer file. A cache whose metadata does not match (another corpus
or settings, a file edited or cut short) is refused with one line naming the file; it is never
silently retrained over. Processes that share the cache folder (torchrun ranks) take a file lock,
so one trains and the others read its result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from shieldwall.atomic import write_text_atomic

__all__ = ["SPECIAL_TOKENS", "TextTokenizer", "ByteTokenizer", "HFTokenizer", "load_tokenizer",
           "corpus_key"]

#: Special tokens, in id order.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(5)


class TextTokenizer:
    """What the data sets need of a tokenizer."""

    kind: str = ""
    vocab_size: int = 0
    pad_id, unk_id, cls_id, sep_id, mask_id = PAD, UNK, CLS, SEP, MASK
    num_special = len(SPECIAL_TOKENS)

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """SHA-256 of the vocabulary and rules: equal only for identical tokenizers."""
        raise NotImplementedError


class ByteTokenizer(TextTokenizer):
    """One id per UTF-8 byte: id ``5 + b`` for byte ``b``."""

    kind = "byte"
    vocab_size = len(SPECIAL_TOKENS) + 256

    def encode(self, text: str) -> list[int]:
        return [self.num_special + b for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(int(i) - self.num_special for i in ids if int(i) >= self.num_special)
        return data.decode("utf-8", errors="replace")

    def fingerprint(self) -> str:
        return hashlib.sha256(b"shieldwall-byte-tokenizer-v1").hexdigest()


class HFTokenizer(TextTokenizer):
    """A ``tokenizers.Tokenizer`` (WordPiece or byte-level BPE) behind :class:`TextTokenizer`."""

    def __init__(self, tokenizer: object, kind: str) -> None:
        self.tok = tokenizer
        self.kind = kind
        self.vocab_size = int(tokenizer.get_vocab_size())  # type: ignore[attr-defined]
        for i, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != i:  # type: ignore[attr-defined]
                raise ValueError(f"tokenizer: special token {token} is not id {i}")

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids])  # type: ignore[attr-defined]

    def to_str(self) -> str:
        return self.tok.to_str()  # type: ignore[attr-defined]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_str().encode()).hexdigest()


def _require_tokenizers():  # noqa: ANN202 - the module
    try:
        import tokenizers
    except ImportError:
        raise ValueError(
            "text_args.tokenizer: wordpiece and bpe need the 'tokenizers' package (pip install "
            "-e \".[text]\"); or set text_args.tokenizer=byte"
        ) from None
    return tokenizers


def train_tokenizer(texts: Sequence[str], kind: str, vocab_size: int) -> HFTokenizer:
    """Train a ``wordpiece`` or ``bpe`` tokenizer of ``vocab_size`` ids on ``texts``."""
    tk = _require_tokenizers()
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    if kind == "wordpiece":
        tok = tk.Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
        )
    elif kind == "bpe":
        tok = tk.Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        raise ValueError(f"text_args.tokenizer: {kind!r} is not one of wordpiece, bpe, byte")
    tok.train_from_iterator(list(texts), trainer=trainer)
    return HFTokenizer(tok, kind)


def corpus_key(texts: Sequence[str], kind: str, vocab_size: int) -> str:
    """SHA-256 of the training text and the tokenizer settings (the cache key)."""
    h = hashlib.sha256(json.dumps({"kind": kind, "vocab_size": vocab_size, "v": 1}).encode())
    for t in texts:
        data = t.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX: no lock
            pass
        yield


def load_tokenizer(
    texts: Sequence[str], kind: str, vocab_size: int, cache_dir: str | os.PathLike[str],
    dataset: str,
) -> TextTokenizer:
    """The ``kind`` tokenizer for this training text: from the cache, or trained and cached.

    Raises:
        ValueError: unknown kind, ``vocab_size`` too small, or a cache entry whose metadata does
            not match its file or this corpus and settings.
    """
    kind = kind.lower()
    if kind == "byte":
        return ByteTokenizer()
    if kind not in ("wordpiece", "bpe"):
        raise ValueError(f"text_args.tokenizer: {kind!r} is not one of wordpiece, bpe, byte")
    low = len(SPECIAL_TOKENS) + (256 if kind == "bpe" else 1)
    if vocab_size <= low:
        raise ValueError(f"text_args.vocab_size must exceed {low} for {kind}, got {vocab_size}")
    key = corpus_key(texts, kind, vocab_size)
    path = Path(os.path.expanduser(cache_dir)) / f"{dataset}-{kind}-{vocab_size}-{key[:16]}.json"
    meta_path = path.with_name(path.name[: -len(".json")] + ".meta.json")
    with _locked(path):
        if path.exists() or meta_path.exists():
            return _read_cached(path, meta_path, key, kind)
        tok = train_tokenizer(texts, kind, vocab_size)
        text = tok.to_str()
        write_text_atomic(path, text)
        meta = {"key": key, "kind": kind, "vocab_size": tok.vocab_size,
                "sha256": hashlib.sha256(text.encode()).hexdigest(), "dataset": dataset}
        write_text_atomic(meta_path, json.dumps(meta, indent=1))
        return tok


def _read_cached(path: Path, meta_path: Path, key: str, kind: str) -> HFTokenizer:
    tk = _require_tokenizers()
    hint = "delete both files to retrain, or set text_args.tokenizer_cache_dir elsewhere"
    try:
        meta = json.loads(meta_path.read_text())
        text = path.read_text()
    except (OSError, ValueError) as exc:
        raise ValueError(f"tokenizer cache {path}: unreadable ({exc}); {hint}") from None
    if meta.get("key") != key or meta.get("kind") != kind:
        raise ValueError(
            f"tokenizer cache {path} was built for another corpus or settings (key "
            f"{str(meta.get('key'))[:16]}, this run needs {key[:16]}); {hint}"
        )
    if hashlib.sha256(text.encode()).hexdigest() != meta.get("sha256"):
        raise ValueError(f"tokenizer cache {path} does not match its {meta_path.name}; {hint}")
    try:
        return HFTokenizer(tk.Tokenizer.from_str(text), kind)
    except Exception as exc:  # noqa: BLE001 - a broken file is one line
        raise ValueError(f"tokenizer cache {path}: not a tokenizer ({exc}); {hint}") from None
