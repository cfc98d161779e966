"""Seed tags: every string tag in the source gets its own random stream."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from shieldwall.seeding import derive_seed, torch_generator

SOURCE = Path(__file__).resolve().parents[1] / "shieldwall"
CALL = re.compile(r"(?:derive_seed|torch_generator|numpy_generator)\([^,()]+,\s*\"([^\"]+)\"")


def test_every_tag_in_the_source_has_its_own_word():
    tags = sorted({t for path in SOURCE.rglob("*.py") for t in CALL.findall(path.read_text())})
    assert {"batch", "sample", "defense", "attack", "rd-batch", "rd-attack"} <= set(tags)
    words: dict[bytes, str] = {}
    for tag in tags:
        other = words.setdefault(tag.encode()[:4], tag)
        assert other == tag, f"seed tags {other!r} and {tag!r} share their first 4 bytes"


def test_redundancy_streams_are_independent_of_each_other():
    # these three once shared one stream: the step's batch decided which workers were adversaries
    draws = [torch.randperm(1000, generator=torch_generator(7, tag, 3))[:5].tolist()
             for tag in ("rd-batch", "rd-attack", "rd-choice")]
    assert draws[0] != draws[1] != draws[2] != draws[0]


def test_a_tag_that_clashes_with_a_used_one_is_refused_and_values_are_stable():
    derive_seed(0, "batch", 1)
    with pytest.raises(ValueError, match="'batch' and 'batches' share their first 4 bytes"):
        derive_seed(0, "batches", 1)
    # the values every run so far was seeded with (first 4 bytes of a tag, zero-padded)
    assert derive_seed(3, "dropout", 5) == 423071387515091356
    assert derive_seed(3, "ab", 1) == 8071623922755578290



