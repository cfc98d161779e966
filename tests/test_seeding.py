"""derive_seed: every coordinate, the whole of every tag, changes the stream."""

from shieldwall.seeding import derive_seed, torch_generator


def test_tags_sharing_a_prefix_give_different_streams():
    # Tags used side by side in the redundancy driver; once only their first 4 bytes counted.
    tags = ["redundant-adversaries", "redundant-attack", "redundant-batch", "attack", "attack_prob"]
    seeds = {derive_seed(0, t, 3) for t in tags}
    assert len(seeds) == len(tags)


def test_deterministic_and_sensitive_to_every_coordinate():
    assert derive_seed(7, "sample", 2, 5) == derive_seed(7, "sample", 2, 5)
    base = derive_seed(7, "sample", 2, 5)
    assert base != derive_seed(8, "sample", 2, 5)
    assert base != derive_seed(7, "samplf", 2, 5)
    assert base != derive_seed(7, "sample", 3, 5)
    assert base != derive_seed(7, "sample", 2, 6)
    assert 0 <= base < 2**63
    a = torch_generator(1, "x").initial_seed()
    assert a == derive_seed(1, "x")
