"""RBNN training (``shiftpool.sw.train.rbnn``): storage slots recycled round by round,
fixed point with truncation and saturation, the paper's effect on digits."""

from __future__ import annotations

import numpy as np
import pytest
from shiftpool.sw.train.datasets import load_digits_split
from shiftpool.sw.train.rbnn import slot_sign, train_rbnn, update_slots


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


def test_slot_sign_reads_the_round_bit():
    slots = np.array([0b1000, 0b0100, 0b1100, 0b0000])
    assert slot_sign(slots, 4, 0).tolist() == [-1, 1, -1, 1]
    assert slot_sign(slots, 4, 1).tolist() == [1, -1, -1, 1]


def test_later_rounds_keep_the_frozen_sign_bits(digits):
    """Round 1 of a 3-round run is the 1-round run (same seed); rounds 2 and 3 change
    only the bits below the frozen ones."""
    one = train_rbnn(*digits, rounds=1, slot_bits=8, hidden=16, epochs=2, seed=3, lr=0.05)
    three = train_rbnn(*digits, rounds=3, slot_bits=8, hidden=16, epochs=2, seed=3, lr=0.05)
    for name in ("hidden_slots", "out_slots"):
        a, b = getattr(one, name), getattr(three, name)
        assert np.array_equal(a >> 7, b >> 7), name           # round 0's sign bit
        assert not np.array_equal(a & 0x7F, b & 0x7F), name   # the plastic bits trained
        assert a.min() >= 0 and b.max() < 256                 # 8-bit slots
    assert [s.stored_bits_per_weight for s in three.history] == [8.0, 4.0, 8 / 3]


def test_updates_truncate_to_the_lsb_and_saturate():
    """Fixed point: a 4-bit field under two frozen bits (6-bit slots). Steps are in
    units of 2**-3, truncated toward zero, saturated to -8..7; the frozen bits stay."""
    slots = np.array([0b10_0011, 0b01_0011, 0b11_1111, 0b00_0110, 0b10_1001])
    step = np.array([0.9, 1.5, -0.9, 0.4, -5.0]) / 8
    out = update_slots(slots, 4, step)
    # fields 3, 3, -1, 6, -7 plus 0, +1, 0, +0 (0.4 LSB), -5 -> 3, 4, -1, 6, -8 (saturated)
    assert out.tolist() == [0b10_0011, 0b01_0100, 0b11_1111, 0b00_0110, 0b10_1000]
    big = update_slots(np.array([0b00_0110]), 4, np.array([10.0]))
    assert big.tolist() == [0b00_0111]


def test_a_learning_rate_below_the_last_field_lsb_is_refused(digits):
    with pytest.raises(ValueError, match="lr = 0.001 is below one LSB"):
        train_rbnn(*digits, rounds=4, slot_bits=10, hidden=4, epochs=1, lr=1e-3)


def test_rounds_buy_accuracy_at_fixed_storage(digits):
    """The paper's effect: more rounds in the same slots beat the plain binary network
    of equal storage, and reach one of 4x the storage."""
    rbnn = train_rbnn(*digits, rounds=4, slot_bits=16, hidden=50, epochs=10, seed=0)
    plain = train_rbnn(*digits, rounds=1, slot_bits=16, hidden=50, epochs=10, seed=0)
    big = train_rbnn(*digits, rounds=1, slot_bits=16, hidden=200, epochs=10, seed=0)
    acc = [s.test_accuracy for s in rbnn.history]
    print(f"\nRBNN rounds {acc}; binary 1x storage {plain.history[0].test_accuracy}, "
          f"4x storage {big.history[0].test_accuracy}")
    assert acc[-1] > plain.history[0].test_accuracy + 0.02
    assert acc[-1] >= big.history[0].test_accuracy - 0.02


@pytest.mark.parametrize("rounds, bits", [(4, 4), (0, 8)])
def test_slots_too_narrow_for_the_rounds_are_refused(digits, rounds, bits):
    with pytest.raises(ValueError, match=f"slot_bits = {bits} cannot hold {rounds} rounds"):
        train_rbnn(*digits, rounds=rounds, slot_bits=bits, hidden=4, epochs=1)
