"""Data attacks (label flipping, backdoor) and the attack schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shieldwall.attacks import ATTACKS, AttackContext
from shieldwall.attacks.backdoor import add_trigger
from shieldwall.attacks.schedule import attack_active, byzantine_ids


def make_ctx(seed: int = 0, num_classes: int | None = 10) -> AttackContext:
    return AttackContext(
        n=5, f=1, generator=torch.Generator().manual_seed(seed), num_classes=num_classes
    )


# --------------------------------------------------------------------------- label flipping


def test_label_flip_default_mapping():
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 9])
    y_before = y.clone()
    new_x, new_y = ATTACKS.get("label_flipping")(x, y, make_ctx())
    assert new_x is x
    assert new_y.tolist() == [9, 8, 7, 0]  # C - 1 - y with C = 10
    assert torch.equal(y, y_before)
    assert new_y.dtype == y.dtype


def test_label_flip_fedml_lists():
    x = torch.randn(5, 2)
    y = torch.tensor([0, 1, 2, 1, 3])
    _, swapped = ATTACKS.get("label_flip")(
        x, y, make_ctx(), original_class_list=[0, 1], target_class_list=[1, 0]
    )
    assert swapped.tolist() == [1, 0, 2, 0, 3]  # simultaneous swap; unlisted labels kept
    _, moved = ATTACKS.get("label_flip")(
        x, y, make_ctx(num_classes=None), original_class_list=[3], target_class_list=[7]
    )
    assert moved.tolist() == [0, 1, 2, 1, 7]
    assert y.tolist() == [0, 1, 2, 1, 3]


def test_label_flip_errors():
    x, y = torch.zeros(2, 1), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="same length"):
        ATTACKS.get("label_flip")(
            x, y, make_ctx(), original_class_list=[0, 1], target_class_list=[1]
        )
    with pytest.raises(ValueError, match="num_classes"):
        ATTACKS.get("label_flip")(x, y, make_ctx(num_classes=None))
    with pytest.raises(ValueError, match="both"):
        ATTACKS.get("label_flip")(x, y, make_ctx(), original_class_list=[0])


# --------------------------------------------------------------------------- backdoor


def test_backdoor_stamps_a_seeded_fraction():
    x = torch.zeros(8, 1, 8, 8)
    y = torch.arange(8) % 3 + 1
    x_before, y_before = x.clone(), y.clone()
    new_x, new_y = ATTACKS.get("backdoor")(
        x, y, make_ctx(seed=4), target_label=0, poison_fraction=0.5, trigger_value=1.0
    )
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    poisoned = (new_x.flatten(1) != 0).any(dim=1)
    assert int(poisoned.sum()) == 4
    assert bool((new_x[poisoned][..., -2:, -2:] == 1.0).all())
    assert int(new_x[poisoned].sum()) == 4 * 4  # only the 2x2 square changed
    assert bool((new_y[poisoned] == 0).all())
    assert torch.equal(new_y[~poisoned], y[~poisoned])
    again_x, again_y = ATTACKS.get("badnets")(
        x, y, make_ctx(seed=4), target_label=0, poison_fraction=0.5, trigger_value=1.0
    )
    assert torch.equal(again_x, new_x) and torch.equal(again_y, new_y)


def test_backdoor_full_batch_needs_no_generator_and_flat_inputs():
    x = torch.zeros(3, 10)
    y = torch.tensor([1, 2, 3])
    ctx = AttackContext(n=5, f=1)
    new_x, new_y = ATTACKS.get("backdoor")(
        x, y, ctx, poison_fraction=1.0, trigger_size=2, target_label=5, trigger_value=2.0
    )
    assert torch.equal(new_x[:, -4:], torch.full((3, 4), 2.0))
    assert torch.equal(new_x[:, :-4], torch.zeros(3, 6))
    assert new_y.tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="generator"):
        ATTACKS.get("backdoor")(x, y, ctx, poison_fraction=0.5)


def test_add_trigger_defaults_to_batch_max():
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0, 0, 0] = 2.5
    out = add_trigger(x)
    assert bool((out[..., -2:, -2:] == 2.5).all())
    assert float(x[..., -2:, -2:].abs().sum()) == 0.0


# --------------------------------------------------------------------------- schedule


def test_byzantine_ids_fixed_set_is_deterministic_and_round_independent():
    first = byzantine_ids(20, 5, 0, seed=7, redraw=False)
    assert len(first) == 5 == len(set(first))
    assert first == sorted(first) and all(0 <= i < 20 for i in first)
    for r in range(1, 6):
        assert byzantine_ids(20, 5, r, seed=7, redraw=False) == first
    assert byzantine_ids(10, 0, 3, seed=1, redraw=False) == []
    assert byzantine_ids(4, 4, 3, seed=1, redraw=True) == [0, 1, 2, 3]


def test_byzantine_ids_redraw_is_deterministic_per_round():
    sets = [byzantine_ids(30, 6, r, seed=3, redraw=True) for r in range(8)]
    assert sets == [byzantine_ids(30, 6, r, seed=3, redraw=True) for r in range(8)]
    assert len({tuple(s) for s in sets}) > 1  # re-drawn across rounds
    assert all(len(set(s)) == 6 for s in sets)


def test_byzantine_ids_leaves_global_rngs_alone():
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    byzantine_ids(50, 10, 4, seed=0, redraw=True)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_byzantine_ids_validation():
    with pytest.raises(ValueError):
        byzantine_ids(3, 4, 0, seed=0, redraw=False)
    with pytest.raises(ValueError):
        byzantine_ids(3, 1, -1, seed=0, redraw=False)


def test_attack_active_window():
    assert attack_active(0, 0, None)
    assert not attack_active(2, 3, None)
    assert attack_active(3, 3, 5) and attack_active(5, 3, 5)  # both ends inclusive
    assert not attack_active(6, 3, 5)
    assert attack_active(4, 4, 4) and not attack_active(3, 4, 4)
    assert attack_active(10**6, 3, None)
