"""Text data: tokenizers and their cache, BERT masking, blocks, WikiText reader, partitions."""

from __future__ import annotations

import json

import pytest
import torch

from shieldwall.attacks import AttackContext
from shieldwall.attacks.label_flip import label_flip
from shieldwall.config.schema import TextArgs
from shieldwall.data import DataNotFoundError, load_dataset
from shieldwall.data.mlm import IGNORE_INDEX, make_blocks, mask_tokens
from shieldwall.data.partition import partition_indices
from shieldwall.data.text import pydoc_documents, read_wikitext
from shieldwall.data.tokenizer import ByteTokenizer, load_tokenizer

pytest.importorskip("tokenizers", reason="the 'text' extra (tokenizers) is not installed")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Byzantine workers send arbitrary vectors; robust aggregation keeps the model safe.",
    "for i in range(10): print(i ** 2)  # squares, with unicode: naïve café",
] * 20

# WikiText's layout: every line starts and ends with a space; blank lines between paragraphs.
WIKI = "".join(f"{line} \n" for line in [
    " = Valkyria Chronicles III =", "",
    " Senjō no Valkyria 3 is a tactical role @-@ playing video game .",
    " It was released in January 2011 .", "",
    " = = Gameplay = =", "",
    " The game 's battle system is <unk> from the previous games .", "",
    " = Tower Building of the Little Rock Arsenal =", "",
    " The Tower Building is a building in Little Rock , Arkansas .",
])


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_byte_level_tokenizers_round_trip_exactly(tmp_path, kind):
    tok = load_tokenizer(CORPUS, kind, 400, tmp_path, "t")
    for text in CORPUS[:3] + ["unseen wörds ✓ and\ttabs\n"]:
        ids = tok.encode(text)
        assert all(tok.num_special <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text


def test_wordpiece_round_trips_normalised_text_and_specials_come_first(tmp_path):
    tok = load_tokenizer(CORPUS, "wordpiece", 300, tmp_path, "t")
    text = "the quick brown fox jumps over the lazy dog."
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("The Quick FOX")) == "the quick fox"  # lower-cased
    assert [tok.tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                          "[MASK]"]
    assert tok.vocab_size <= 300


def test_tokenizer_cache_is_reused_and_a_mismatch_is_one_clear_error(tmp_path):
    first = load_tokenizer(CORPUS, "wordpiece", 300, tmp_path, "t")
    (meta,) = tmp_path.glob("*.meta.json")
    (tok_file,) = [p for p in tmp_path.glob("*.json") if p != meta]
    again = load_tokenizer(CORPUS, "wordpiece", 300, tmp_path, "t")
    assert again.fingerprint() == first.fingerprint()
    load_tokenizer(CORPUS[:30], "wordpiece", 300, tmp_path, "t")  # another corpus: another file
    assert len(list(tmp_path.glob("*.meta.json"))) == 2
    data = json.loads(meta.read_text())
    meta.write_text(json.dumps({**data, "key": "0" * 64}))
    with pytest.raises(ValueError, match="was built for another corpus or settings") as info:
        load_tokenizer(CORPUS, "wordpiece", 300, tmp_path, "t")
    assert "\n" not in str(info.value)
    meta.write_text(json.dumps(data))
    tok_file.write_text(tok_file.read_text().replace("quick", "quack"))  # edited vocabulary
    with pytest.raises(ValueError, match="does not match its"):
        load_tokenizer(CORPUS, "wordpiece", 300, tmp_path, "t")
    meta.unlink()
    with pytest.raises(ValueError, match="unreadable"):
        load_tokenizer(CORPUS, "wordpiece", 300, tmp_path, "t")


def test_masking_statistics_follow_bert():
    gen = torch.Generator().manual_seed(0)
    vocab, special = 1000, 5
    blocks = torch.randint(special, vocab, (400, 128), generator=gen)
    blocks[:, 0], blocks[:, -1], blocks[:50, 100:] = 2, 3, 0  # [CLS], [SEP], padding
    inputs, targets = mask_tokens(blocks, vocab_size=vocab, num_special=special, mask_id=4,
                                  probability=0.15, generator=gen)
    selected = targets != IGNORE_INDEX
    candidates = blocks >= special
    assert not (selected & ~candidates).any()  # specials and padding never predicted
    assert torch.equal(targets[selected], blocks[selected])
    assert torch.equal(inputs[~selected], blocks[~selected])  # unselected inputs untouched
    rate = selected.sum() / candidates.sum()
    assert abs(float(rate) - 0.15) < 0.005  # ~46k candidates: 5 sigma is about 0.008
    n = int(selected.sum())
    masked = (inputs == 4) & selected
    kept = (inputs == blocks) & selected
    changed = selected & ~masked & ~kept
    assert abs(int(masked.sum()) / n - 0.8) < 0.02
    assert abs(int(kept.sum()) / n - 0.1) < 0.015  # (random may hit the same id: 1/995)
    assert abs(int(changed.sum()) / n - 0.1) < 0.015
    assert int(inputs[changed].min()) >= special
    assert bool(selected.any(dim=1).all())  # every block has something to predict


def test_blocks_are_framed_padded_and_remember_their_document():
    docs = [list(range(10, 25)), list(range(30, 32)), list(range(40, 48))]
    blocks, groups = make_blocks(docs, 8, cls_id=2, sep_id=3, pad_id=0, min_tokens=3)
    assert blocks.shape == (4, 8)
    assert blocks[0].tolist() == [2, 10, 11, 12, 13, 14, 15, 3]
    assert blocks[2].tolist() == [2, 22, 23, 24, 3, 0, 0, 0]  # last piece of doc 0, padded
    assert groups.tolist() == [0, 0, 0, 2]  # doc 1 and doc 2's tail are shorter than min_tokens


def test_wikitext_reader_splits_articles_keeping_sections(tmp_path):
    path = tmp_path / "wiki.train.tokens"
    path.write_text(WIKI)
    docs = read_wikitext(path)
    assert len(docs) == 2
    assert docs[0].startswith("= Valkyria Chronicles III =")
    assert "= = Gameplay = =" in docs[0] and "<unk>" in docs[0]
    assert docs[1].startswith("= Tower Building")
    assert read_wikitext(path, max_documents=1) == docs[:1]
    empty = tmp_path / "empty.tokens"
    empty.write_text("\n \n")
    with pytest.raises(ValueError, match="is empty"):
        read_wikitext(empty)


def test_wikitext_dataset_from_a_parent_folder_and_bad_folders(tmp_path):
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"wiki.{split}.tokens").write_text(WIKI * (8 if split == "train" else 1))
    opts = TextArgs(tokenizer="byte", max_seq_length=32, dupe_factor=2,
                    tokenizer_cache_dir=str(tmp_path / "tok"))
    data = load_dataset("wikitext-2", str(tmp_path), opts)
    assert data.train_x.shape[1] == 32 and data.num_classes == 261
    assert data.eval_split == "valid" and data.extra["test"][0].shape[1] == 32
    assert data.train_groups.shape == (data.train_x.shape[0],)
    assert data.extra["num_documents"]["train"] == 16
    (folder / "wiki.test.tokens").unlink()
    with pytest.raises(DataNotFoundError, match=r"wiki\.test\.tokens"):
        load_dataset("wikitext2", str(folder), opts)
    (folder / "wiki.test.tokens").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_dataset("wikitext2", str(folder), opts)
    with pytest.raises(DataNotFoundError, match="wiki.train.raw"):
        load_dataset("wikitext103_raw", str(tmp_path), opts)


def test_embedded_corpus_splits_by_topic():
    splits = pydoc_documents()
    total = sum(len(d) for docs in splits.values() for d in docs)
    assert total > 400_000
    for split in ("valid", "test"):
        assert 0.1 <= sum(len(d) for d in splits[split]) / total < 0.3
    assert len(splits["train"]) > 50


def test_document_partition_never_shares_a_document():
    groups = torch.tensor([0] * 10 + [1] * 3 + [2] * 7 + [3] * 5 + [4] * 5 + [5] * 2)
    parts = partition_indices(groups, 3, "by_document", seed=1)
    assert sorted(torch.cat(parts).tolist()) == list(range(len(groups)))
    owners = {}
    for c, idx in enumerate(parts):
        for g in groups[idx].unique().tolist():
            assert owners.setdefault(g, c) == c
    sizes = sorted(len(p) for p in parts)
    assert sizes[-1] - sizes[0] <= 10
    with pytest.raises(ValueError, match="documents cannot give each"):
        partition_indices(groups, 7, "document")


def test_label_flip_on_mlm_targets_keeps_ignored_positions():
    y = torch.tensor([[IGNORE_INDEX, 7, IGNORE_INDEX, 0], [5, IGNORE_INDEX, 9, IGNORE_INDEX]])
    x = torch.zeros_like(y)
    x2, flipped = label_flip(x, y, AttackContext(n=1, f=1, num_classes=10))
    assert x2 is x
    # BTARD's ALBERT label flipping: the next token id, modulo the vocabulary.
    assert flipped.tolist() == [[IGNORE_INDEX, 8, IGNORE_INDEX, 1], [6, IGNORE_INDEX, 0,
                                                                    IGNORE_INDEX]]
    _, mapped = label_flip(x, y, AttackContext(n=1, f=1, num_classes=10),
                           original_class_list=[7, 5], target_class_list=[5, 7])
    assert mapped.tolist() == [[IGNORE_INDEX, 5, IGNORE_INDEX, 0], [7, IGNORE_INDEX, 9,
                                                                   IGNORE_INDEX]]


def test_byte_tokenizer_ids():
    tok = ByteTokenizer()
    assert tok.encode("A") == [5 + 65]
    assert tok.vocab_size == 261


def test_direction_attacks_have_the_honest_norm_times_scale():
    from shieldwall.attacks.direction import constant_direction, random_direction

    honest = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    ctx = AttackContext(n=4, f=2, generator=torch.Generator().manual_seed(1))
    rows = constant_direction(honest, 3, ctx, scale=10.0)
    assert rows.norm(dim=1).tolist() == pytest.approx([50.0, 20.0, 50.0])
    again = constant_direction(honest, 1, AttackContext(n=4, f=2), scale=1.0)
    assert torch.allclose(again[0] / 5, rows[0] / 50)  # the same direction every round
    r1 = random_direction(honest, 1, ctx, scale=1.0)
    r2 = random_direction(honest, 1, ctx, scale=1.0)
    assert float(r1.norm()) == pytest.approx(5.0) and not torch.allclose(r1, r2)
