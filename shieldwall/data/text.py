"""Text data sets for masked language modelling: an embedded corpus and WikiText-2/103.

* ``pydoc_topics`` (aliases ``text``, ``python_docs``): embedded, needs no files. CPython ships
  the help topics of the Python reference as English prose in ``pydoc_data.topics`` (79 topics,
  ~465 KB). Each topic is a document; the topics are shuffled with a fixed seed and the first go
  to ``test`` and ``valid`` until each holds at least 10% of the characters, the rest to
  ``train``.
* ``wikitext2`` / ``wikitext103`` (Merity et al. 2016): read from ``wiki.train.tokens``,
  ``wiki.valid.tokens`` and ``wiki.test.tokens`` as distributed (folders ``wikitext-2``,
  ``wikitext-103``…); ``wikitext2_raw`` / ``wikitext103_raw`` read the raw variant
  ``wiki.{train,valid,test}.raw`` (folders ``wikitext-2-raw``…). A document is an article: it
  starts at a title line `` = Title = `` (one ``=`` on each side; `` = = Section = = `` lines stay
  inside the article); blank lines are dropped. Nothing is downloaded.

The training split trains the tokenizer (:mod:`.tokenizer`); every split is cut into blocks and
masked as BERT does (:mod:`.mlm`): ``train_x``/``train_y`` hold ``dupe_factor`` differently
masked copies of the training blocks, ``test_x``/``test_y`` the validation split (evaluated each
round; ``eval_split == "valid"``), and ``extra["test"]`` the test split. ``train_groups`` is each
block's document, for ``partition_method: document``. Settings come from ``text_args``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from shieldwall.data import DATASETS, Dataset
from shieldwall.data.files import locate, missing_file_error
from shieldwall.data.mlm import make_blocks, mask_tokens
from shieldwall.data.tokenizer import TextTokenizer, load_tokenizer

__all__ = ["pydoc_documents", "read_wikitext", "wikitext_documents", "build_text_dataset"]

DEFAULT_CACHE = "~/.cache/shieldwall/tokenizers"
MASK_SEED = 20240917
_TITLE = re.compile(r"^ ?= [^=].* = ?$")


def _options(options: Any) -> Any:
    if options is None:
        from shieldwall.config.schema import TextArgs

        return TextArgs()
    return options


def pydoc_documents() -> dict[str, list[str]]:
    """The embedded corpus split into ``train``/``valid``/``test`` lists of documents."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(MASK_SEED))
    total = sum(len(topics[n]) for n in names)
    splits: dict[str, list[str]] = {"test": [], "valid": [], "train": []}
    filled = {"test": 0, "valid": 0}
    for i in order.tolist():
        text = topics[names[i]].strip()
        target = next((s for s in ("test", "valid") if filled[s] < total // 10), "train")
        splits[target].append(text)
        if target != "train":
            filled[target] += len(text)
    return splits


def read_wikitext(path: Path, max_documents: int | None = None) -> list[str]:
    """The articles of one WikiText file (see module docstring); ValueError if it has none."""
    docs: list[str] = []
    current: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if _TITLE.match(line):
                if current:
                    docs.append("\n".join(current))
                    if max_documents is not None and len(docs) >= max_documents:
                        current = []
                        break
                current = []
            current.append(line.strip())
    if current:
        docs.append("\n".join(current))
    if not docs:
        raise ValueError(f"text file {path} is empty (no lines of text)")
    return docs


def wikitext_documents(
    name: str, root: str | None, version: str, suffix: str, max_documents: int | None = None
) -> dict[str, list[str]]:
    """``train``/``valid``/``test`` articles of WikiText-``version`` (``tokens`` or ``raw``)."""
    files = {s: f"wiki.{s}.{suffix}" for s in ("train", "valid", "test")}
    raw = "-raw" if suffix == "raw" else ""
    folders = (f"wikitext-{version}{raw}", f"wikitext-{version}{raw}-v1", f"wikitext{version}{raw}")
    folder = locate(name, root, folders, lambda f: (f / files["train"]).is_file(),
                    list(files.values()))
    out = {}
    for split, fname in files.items():
        if not (folder / fname).is_file():
            raise missing_file_error(name, folder, [fname])
        out[split] = read_wikitext(folder / fname, max_documents)
    return out


def _encode(tok: TextTokenizer, docs: list[str]) -> list[list[int]]:
    batch = getattr(getattr(tok, "tok", None), "encode_batch", None)
    if batch is not None:
        return [list(e.ids) for e in batch(docs, add_special_tokens=False)]
    return [tok.encode(d) for d in docs]


def build_text_dataset(name: str, splits: dict[str, list[str]], options: Any = None) -> Dataset:
    """Tokenize, block and mask ``splits`` (``train``/``valid``/``test`` documents)."""
    o = _options(options)
    if o.dupe_factor < 1:
        raise ValueError(f"text_args.dupe_factor must be at least 1, got {o.dupe_factor}")
    for split, docs in splits.items():
        if not any(d.strip() for d in docs):
            raise ValueError(f"{name}: the {split} split has no text")
    cache = o.tokenizer_cache_dir or os.environ.get("SHIELDWALL_TOKENIZER_CACHE") or DEFAULT_CACHE
    tok = load_tokenizer(splits["train"], o.tokenizer, o.vocab_size, cache, name)
    vocab = tok.vocab_size
    examples: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for k, (split, docs) in enumerate(splits.items()):
        blocks, groups = make_blocks(_encode(tok, docs), o.max_seq_length, cls_id=tok.cls_id,
                                     sep_id=tok.sep_id, pad_id=tok.pad_id)
        if blocks.shape[0] == 0:
            raise ValueError(f"{name}: the {split} split gives no block of text")
        copies = o.dupe_factor if split == "train" else 1
        xs, ys = [], []
        for c in range(copies):
            gen = torch.Generator().manual_seed(MASK_SEED + 1000 * k + c)
            x, y = mask_tokens(blocks, vocab_size=vocab, num_special=tok.num_special,
                               mask_id=tok.mask_id, probability=o.mlm_probability, generator=gen)
            xs.append(x)
            ys.append(y)
        examples[split] = (torch.cat(xs), torch.cat(ys), groups.repeat(copies))
    tx, ty, tg = examples["train"]
    vx, vy, _ = examples["valid"]
    sx, sy, _ = examples["test"]
    return Dataset(
        name, tx, ty, vx, vy, vocab, train_groups=tg, eval_split="valid",
        extra={"tokenizer": tok, "test": (sx, sy), "pad_id": tok.pad_id,
               "tokenizer_fingerprint": tok.fingerprint(),
               "num_documents": {s: len(d) for s, d in splits.items()}},
    )


@DATASETS.register("pydoc_topics", aliases=("text", "python_docs", "pydoc"), embedded=True,
                   options=True, text=True)
def load_pydoc_topics(root: str | None = None, options: Any = None) -> Dataset:
    """The embedded text corpus (``root`` is ignored)."""
    return build_text_dataset("pydoc_topics", pydoc_documents(), options)


def _wikitext_loader(name: str, version: str, suffix: str, aliases: tuple[str, ...]) -> None:
    raw = "-raw" if suffix == "raw" else ""

    def load(root: str | None = None, options: Any = None) -> Dataset:
        o = _options(options)
        splits = wikitext_documents(name, root, version, suffix, o.max_documents)
        return build_text_dataset(name, splits, o)

    load.__doc__ = f"WikiText-{version} ({suffix} files), read from ``data_cache_dir``."
    DATASETS.add(name, load, aliases=aliases, options=True, text=True,
                 folders=(f"wikitext-{version}{raw}", f"wikitext-{version}{raw}-v1"))


_wikitext_loader("wikitext2", "2", "tokens", ("wikitext-2", "wikitext_2", "wikitext-2-v1"))
_wikitext_loader("wikitext103", "103", "tokens", ("wikitext-103", "wikitext_103",
                                                  "wikitext-103-v1"))
_wikitext_loader("wikitext2_raw", "2", "raw", ("wikitext-2-raw", "wikitext-2-raw-v1"))
_wikitext_loader("wikitext103_raw", "103", "raw", ("wikitext-103-raw", "wikitext-103-raw-v1"))
