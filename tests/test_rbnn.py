"""RBNN training (``shiftpool.sw.train.rbnn``): storage slots recycled round by round,
fixed point with truncation and saturation, the paper's effect on digits."""

from __future__ import annotations

import re

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


# -- the rbnn scheme: compress, model file, golden ------------------------------------

@pytest.fixture(scope="module")
def rbnn_model(digits):
    from shiftpool.sw.schemes.compress import compress
    from shiftpool.sw.train.nn import Dense, FloatModel, ReLU

    rng = np.random.default_rng(0)
    mlp = FloatModel([Dense(64, 24, rng), ReLU(), Dense(24, 10, rng)], (1, 8, 8))
    x_train, y_train, x_test, y_test = digits
    return compress(mlp, "rbnn", x_train=x_train, y_train=y_train, x_test=x_test,
                    y_test=y_test, epochs=4, rounds=3, slot_bits=8, slot_lr=0.05,
                    progress=False)


def test_rbnn_model_stores_the_slots_and_round_trips(rbnn_model, digits, tmp_path):
    from shiftpool.sw.model.file import load_model, save_model
    from shiftpool.sw.schemes import golden

    hidden, out = (layer for layer in rbnn_model.layers if layer.is_mac)
    assert hidden.slots.shape == (24, 64) and out.slots.shape == (10, 24)
    assert (hidden.expand, out.expand) == ("outputs", "inputs")
    assert hidden.out_shape == (72,) and out.fan_in == 72
    assert rbnn_model.meta["stored_bits_per_weight"] == 8 / 3
    save_model(rbnn_model, tmp_path / "r.npz")
    back = load_model(tmp_path / "r.npz")
    x = rbnn_model.quantize_input(digits[2])
    assert np.array_equal(golden.run(back, x), golden.run(rbnn_model, x))
    assert rbnn_model.meta["accuracy"] > 0.8


def test_golden_reads_one_sign_bit_per_round(rbnn_model, digits):
    """An independent evaluation from the slots, bit by bit, as docs/model-format.md
    states the layout: unit r*H + j of the hidden layer uses bit N-1-r of slot [j, i]."""
    from shiftpool.sw.schemes import golden

    hidden, out = (layer for layer in rbnn_model.layers if layer.is_mac)
    n, k, h = hidden.slot_bits, hidden.rounds, hidden.slots.shape[0]
    x = rbnn_model.quantize_input(digits[2][:20]).reshape(20, -1)
    w1 = np.zeros((k * h, 64), dtype=np.int64)
    w2 = np.zeros((10, k * h), dtype=np.int64)
    for r in range(k):
        for j in range(h):
            for i in range(64):
                w1[r * h + j, i] = -1 if int(hidden.slots[j, i]) >> (n - 1 - r) & 1 else 1
            for o in range(10):
                w2[o, r * h + j] = -1 if int(out.slots[o, j]) >> (n - 1 - r) & 1 else 1
    acc = x @ w1.T + hidden.bias
    s = hidden.shift
    a = np.clip((acc + (1 << (s - 1) if s else 0)) >> s, 0, (1 << rbnn_model.act_bits) - 1)
    expect = a @ w2.T + out.bias
    assert np.array_equal(golden.run(rbnn_model, x.reshape(20, 1, 8, 8)), expect)


@pytest.mark.parametrize("field, value, words", [
    ("rounds", 8, "field 'rounds': 8 must be an integer in 1..slot_bits - 1 = 7"),
    ("slot_bits", 17, "field 'slot_bits': 17 must be an integer in 2..16"),
    ("expand", "rows", "field 'expand': 'rows' must be one of outputs, inputs"),
    ("slots", np.full((24, 64), 256), "field 'slots': slots must be in 0..255"),
    ("slots", np.zeros((24, 63), dtype=np.int64), "field 'slots': shape (24, 63)"),
])
def test_malformed_rbnn_layers_name_the_field(rbnn_model, field, value, words):
    import copy

    from shiftpool.sw.model.file import ModelError

    model = copy.deepcopy(rbnn_model)
    setattr(model.layers[0], field, value)
    with pytest.raises(ModelError, match=rf"layer 0: {re.escape(words)}"):
        model.validate()


def test_rbnn_needs_an_mlp():
    from shiftpool.sw.schemes.compress import compress
    from shiftpool.sw.train.nn import Conv3x3, Dense, FloatModel, ReLU

    rng = np.random.default_rng(1)
    cnn = FloatModel([Conv3x3(1, 2, rng), ReLU(), Dense(128, 10, rng)], (1, 8, 8))
    x = np.zeros((4, 1, 8, 8))
    with pytest.raises(ValueError, match="rbnn trains an MLP D - H - C"):
        compress(cnn, "rbnn", x_train=x, y_train=np.arange(4), progress=False)


def test_no_engine_yet_is_one_clear_error(rbnn_model):
    from shiftpool.hw.config import ConfigError
    from shiftpool.sw.compile.fit import fit_config

    with pytest.raises(ConfigError, match="no accelerator runs scheme 'rbnn' yet: the binary "
                                          "engine exists"):
        fit_config(rbnn_model)


def test_compress_prints_the_rounds_beside_the_plain_binary_network(tmp_path, capsys):
    """``compress --scheme rbnn``: a line per round (binary weights and N/K stored bits
    per weight grow and shrink with the rounds), then the plain binary network of equal
    storage, trained by the same code, beside it."""
    from shiftpool.sw.train.nn import Dense, FloatModel, ReLU, save_float_model

    from shiftpool.cli import main

    rng = np.random.default_rng(3)
    save_float_model(FloatModel([Dense(64, 24, rng), ReLU(), Dense(24, 10, rng)],
                                (1, 8, 8)), tmp_path / "mlp.npz")
    code = main(["compress", "--scheme", "rbnn", "--float-model", str(tmp_path / "mlp.npz"),
                 "--rounds", "3", "--slot-bits", "8", "--slot-lr", "0.05", "--epochs", "2",
                 "-o", str(tmp_path / "r.npz")])
    out = capsys.readouterr().out
    assert code == 0, out
    slots = 64 * 24 + 24 * 10
    for r in (1, 2, 3):
        assert re.search(rf"^\s+{r}\s+{r * slots}\s+{8 / r:.2f}\s+0\.\d{{4}}$", out, re.M), out
    line = [s for s in out.splitlines() if "plain binary network of equal storage" in s]
    assert len(line) == 1 and "(3 rounds, 2.67 stored bits per weight)" in line[0]
    assert f"(1 round, 8 bits per slot, {slots} binary weights)" in line[0]
