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


@pytest.mark.parametrize("field, value, words", [
    ("act_depth", 64, "config field 'act_depth' = 64 is too small: a feature map needs 72"),
    ("program_depth", 3, "config field 'program_depth' = 3 is too small for 2 layers "
                         "(4 descriptors)"),
])
def test_rounds_that_do_not_fit_the_memories_name_the_field(rbnn_model, field, value, words,
                                                           tmp_path):
    """3 rounds of 24 units need 3 * 24 activations for the hidden map and 3 + 1
    descriptors; smaller memories are one line naming the config field, and
    ``generate`` leaves no folder behind."""
    import dataclasses

    from shiftpool.hw.config import ConfigError
    from shiftpool.sim.flow import generate
    from shiftpool.sw.compile.fit import fit_config
    from shiftpool.sw.model.file import save_model

    with pytest.raises(ConfigError, match=re.escape(words)):
        fit_config(rbnn_model, lanes=2, taps=4, **{field: value})
    save_model(rbnn_model, tmp_path / "r.npz")
    config = fit_config(rbnn_model, lanes=2, taps=4)
    with pytest.raises(ConfigError, match=re.escape(words)):
        generate(tmp_path / "r.npz", tmp_path / "design",
                 config=dataclasses.replace(config, **{field: value}))
    assert not (tmp_path / "design").exists()


def test_rbnn_needs_an_epoch(digits):
    """RBNN trains from scratch, so epochs = 0 (elsewhere: no fine-tuning) is refused."""
    from shiftpool.sw.schemes.compress import compress
    from shiftpool.sw.train.nn import Dense, FloatModel, ReLU

    rng = np.random.default_rng(2)
    mlp = FloatModel([Dense(64, 4, rng), ReLU(), Dense(4, 10, rng)], (1, 8, 8))
    with pytest.raises(ValueError, match="epochs: rbnn trains its network from scratch"):
        compress(mlp, "rbnn", x_train=digits[0], y_train=digits[1], epochs=0, progress=False)


def test_rbnn_needs_an_mlp():
    from shiftpool.sw.schemes.compress import compress
    from shiftpool.sw.train.nn import Conv3x3, Dense, FloatModel, ReLU

    rng = np.random.default_rng(1)
    cnn = FloatModel([Conv3x3(1, 2, rng), ReLU(), Dense(128, 10, rng)], (1, 8, 8))
    x = np.zeros((4, 1, 8, 8))
    with pytest.raises(ValueError, match="rbnn trains an MLP D - H - C"):
        compress(cnn, "rbnn", x_train=x, y_train=np.arange(4), progress=False)


@pytest.mark.parametrize("change, words", [
    ("slot_bits", "config field 'slot_bits' = 16 but layer 0's slots have 8 bits"),
    ("alone", "layer 0: an RBNN layer whose rounds extend its inputs must follow an RBNN "
              "hidden layer of 2 rounds of 32 units"),
    ("rounds", "layer 1: an RBNN layer whose rounds extend its inputs must follow an RBNN "
               "hidden layer of 2 rounds of 36 units"),
    ("hidden_last", "layer 0: an RBNN hidden layer of 3 rounds cannot be the last layer"),
])
def test_layouts_the_binary_engine_cannot_run_are_one_line(rbnn_model, change, words):
    """Legal model files the binary engine cannot run: the config's slot width must be
    the model's; a layer whose rounds extend its inputs must read a hidden layer of as
    many rounds and units (docs/model-format.md §2.12)."""
    import copy

    from shiftpool.hw.config import AcceleratorConfig, ConfigError
    from shiftpool.sw.compile.fit import fit_config
    from shiftpool.sw.compile.image import compile_model

    model = copy.deepcopy(rbnn_model)
    config = fit_config(rbnn_model, lanes=2, taps=4)
    out = model.layers[1]
    if change == "slot_bits":
        config = AcceleratorConfig.from_dict(dict(config.as_dict(), slot_bits=16))
    elif change == "alone":       # the output layer alone on the 64 inputs, 2 x 32
        out.in_shape, out.rounds = model.layers[0].in_shape, 2
        out.slots = np.zeros((10, 32), dtype=np.uint16)
        model.layers = [out]
    elif change == "hidden_last":     # the hidden layer's 72 units as the model's outputs
        model.layers = [model.layers[0]]
        model.layers[0].relu, model.layers[0].shift = False, 0
        config = AcceleratorConfig.from_dict(dict(config.as_dict(), out_depth=72))
    else:                         # 72 hidden units read as 2 rounds of 36, not 3 of 24
        out.rounds, out.slots = 2, np.zeros((10, 36), dtype=np.uint16)
    model.validate()
    with pytest.raises(ConfigError, match=re.escape(words)):
        compile_model(model, config)


def rbnn_case(seed: int):
    """A random RBNN MLP (rounds, slot width, layer sizes), configuration and inputs;
    every choice comes from ``seed``."""
    from shiftpool.sw.compile.fit import fit_config
    from shiftpool.sw.model.randmodel import random_rbnn_model

    rng = np.random.default_rng(seed)
    act_bits = int(rng.integers(2, 9))
    slot_bits = int(rng.integers(3, 17))
    model = random_rbnn_model(rng, act_bits=act_bits, inputs=int(rng.integers(1, 20)),
                              hidden=int(rng.integers(1, 10)), classes=int(rng.integers(1, 7)),
                              rounds=int(rng.integers(1, min(6, slot_bits))),
                              slot_bits=slot_bits)
    config = fit_config(model, lanes=int(rng.integers(1, 5)),
                        taps=int(rng.choice([1, 2, 3, 4, 5, 8])))
    x = rng.integers(0, 1 << act_bits, size=(3,) + tuple(model.input_shape))
    hidden = model.layers[0]
    what = (f"seed {seed}: {hidden.rounds} rounds of {hidden.slots.shape[0]} units, "
            f"{hidden.slot_bits}-bit slots, {hidden.fan_in} inputs, {model.classes} "
            f"outputs, act_bits {act_bits}, lanes {config.lanes}, taps {config.taps}")
    return model, config, x, what


@pytest.mark.parametrize("seed", range(300, 316))
def test_random_rbnn_models_run_bit_exact_in_amaranth(seed):
    """The whole accelerator with the binary engine, in Amaranth's simulator, against
    the golden model and the cycle model, random stream timing."""
    from test_accelerator import Case, check_case

    model, config, x, what = rbnn_case(seed)
    print(what)
    check_case(Case(seed, model, config, x, idle_gap=0.3, back_pressure=0.3))


def test_rbnn_cases_cover_the_space():
    """The random cases include one and several rounds, round blocks that fill whole
    words and ones that do not, one lane and several, one tap and several."""
    cases = [rbnn_case(seed)[:2] for seed in range(300, 316)]
    rounds = {m.layers[0].rounds for m, _ in cases}
    assert 1 in rounds and max(rounds) >= 3
    assert any(m.layers[0].slots.shape[0] % c.taps for m, c in cases)
    assert any(m.layers[0].slots.shape[0] % c.taps == 0 and c.taps > 1 for m, c in cases)
    assert {1} < {c.lanes for _, c in cases} and {1} < {c.taps for _, c in cases}


def test_slots_are_stored_once_and_read_every_round(rbnn_model):
    """The weight memory holds each slot once, whatever the rounds: as many rows as one
    round of plain dense layers would take (storage recycling is visible in the memory);
    the program runs the hidden layer once per round."""
    from shiftpool.sw.compile.fit import fit_config
    from shiftpool.sw.compile.image import compile_model

    config = fit_config(rbnn_model, lanes=2, taps=4)
    image = compile_model(rbnn_model, config)
    hidden, out = rbnn_model.layers
    h, d = hidden.slots.shape
    c = out.slots.shape[0]
    per_round = -(-h // 4)
    assert len(image.regions["weights"]) == -(-h // 2) * -(-d // 4) + -(-c // 2) * per_round
    assert len(image.descriptors) == hidden.rounds + 1
    assert len(image.regions["bias"]) == hidden.rounds * -(-h // 2) + -(-c // 2)
    assert config.act_depth >= hidden.rounds * per_round * 4
    assert config.code_width == hidden.slot_bits == 8


@pytest.mark.parametrize("simulator, seed", [
    # A Verilator build costs about 30 s and an Icarus one about 1 s on these designs.
    pytest.param("verilator", 321, marks=[pytest.mark.verilator, pytest.mark.slow]),
    pytest.param("icarus", 321, marks=[pytest.mark.icarus, pytest.mark.slow]),
    pytest.param("icarus", 322, marks=[pytest.mark.icarus, pytest.mark.slow]),
    pytest.param("icarus", 323, marks=[pytest.mark.icarus, pytest.mark.slow]),
])
def test_random_rbnn_configurations_bit_exact(seed, simulator, sim_build_dir):
    from shiftpool.sim.flow import first_mismatch, simulate

    model, config, x, what = rbnn_case(seed)
    result = simulate(model, x, config, simulator=simulator, build_dir=sim_build_dir,
                      seed=seed, idle_gap=0.3, back_pressure=0.3)
    assert first_mismatch(model, x, result) is None, f"{what}, {simulator}"
    assert result.cycles_match, f"{what}, {simulator}: {result.cycles} != " \
                                f"{result.predicted_cycles}"


@pytest.mark.parametrize("simulator, images", [
    pytest.param("verilator", 360, marks=[pytest.mark.verilator, pytest.mark.slow]),
    pytest.param("icarus", 12, marks=[pytest.mark.icarus, pytest.mark.slow]),
])
def test_digits_rbnn_model_bit_exact(rbnn_model, digits, simulator, images, sim_build_dir):
    """The trained digits RBNN (3 rounds of 24 units in 8-bit slots) on the test split:
    the whole split on Verilator, a slice on Icarus, 2 lanes x 4 taps."""
    from shiftpool.sim.flow import first_mismatch, simulate
    from shiftpool.sw.compile.fit import fit_config

    x = rbnn_model.quantize_input(digits[2][:images])
    config = fit_config(rbnn_model, lanes=2, taps=4)
    result = simulate(rbnn_model, x, config, simulator=simulator, build_dir=sim_build_dir,
                      seed=13, idle_gap=0.1, back_pressure=0.1)
    assert first_mismatch(rbnn_model, x, result) is None, simulator
    assert result.cycles_match and len(result.rtl) == images


@pytest.mark.icarus
@pytest.mark.synth
@pytest.mark.slow
def test_digits_rbnn_netlist_bit_exact(rbnn_model, digits, sim_build_dir):
    """The iCE40 netlist of the binary-engine accelerator (yosys, cell models on Icarus)
    on one test image (a gate-level inference takes about 25 s)."""
    from shiftpool.sim.flow import first_mismatch
    from shiftpool.sim.gatelevel import simulate
    from shiftpool.sw.compile.fit import fit_config

    x = rbnn_model.quantize_input(digits[2][:1])
    result = simulate(rbnn_model, x, fit_config(rbnn_model, lanes=2, taps=4),
                      build_dir=sim_build_dir)
    assert first_mismatch(rbnn_model, x, result) is None
    assert result.cycles_match


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


@pytest.mark.icarus
@pytest.mark.slow
def test_demo_puts_rbnn_beside_flightnn_and_int8(tmp_path, capsys):
    """``demo --scheme rbnn``: the three schemes of the digits MLP through the RTL (on
    Icarus: three builds of a second each, where Verilator takes half a minute), each
    equal to its golden model with the cycle model's cycles; the rbnn row's stored bits
    per weight are N/K; the JSON holds the same rows."""
    import json

    from shiftpool.cli import main

    code = main(["demo", "--scheme", "rbnn", "--simulator", "icarus", "--samples", "16",
                 "--rounds", "2",
                 "--slot-bits", "8", "--slot-lr", "0.05", "--epochs", "1", "--cache-dir",
                 str(tmp_path / "cache"), "--json", str(tmp_path / "demo.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = json.loads((tmp_path / "demo.json").read_text())["rows"]
    assert [r["scheme"] for r in rows] == ["rbnn", "flightnn", "int8"]
    assert [r["engine"] for r in rows] == ["binary", "shiftadd", "int8"]
    assert all(r["equal"] == r["n"] == 16 and r["cycles_match"] for r in rows), rows
    rbnn, int8 = rows[0], rows[2]
    # 2 rounds of the MLP's 100 hidden units: 64*100 + 100*10 slots of 8 bits
    assert rbnn["weight_bits"] == (64 * 100 + 100 * 10) * 8 and rbnn["weights"] == 2 * 7400
    assert int8["weight_bits"] == 7400 * 8
    assert re.search(r"^rbnn +binary .* 16/16 .* 4\.00 +1\.00x$", out, re.M), out  # 8-bit slots
    assert "2 rounds of 100 hidden units in 8-bit slots (4.00 stored bits per binary " \
           "weight)" in out
    assert "cycles match the cycle model: True" in out


@pytest.mark.verilator
@pytest.mark.slow
def test_an_mnist_rbnn_runs_bit_exact(sim_build_dir):
    """An RBNN of the MNIST MLP's shape (784 inputs; 2 rounds of 16 hidden units in
    8-bit slots, one epoch per round on 1000 training images, to keep the test short)
    on 20 MNIST test images: bit-exact with the cycle model's cycles at 2 lanes x 4
    taps, on Verilator (Icarus took 114 s for the 20 images; the digits RBNN runs on
    both simulators)."""
    from shiftpool.sim.flow import first_mismatch, simulate
    from shiftpool.sw.compile.fit import fit_config
    from shiftpool.sw.schemes.compress import compress
    from shiftpool.sw.train.datasets import load_mnist_split
    from shiftpool.sw.train.nn import Dense, FloatModel, ReLU

    x_train, y_train, x_test, y_test = load_mnist_split()
    rng = np.random.default_rng(0)
    mlp = FloatModel([Dense(784, 16, rng), ReLU(), Dense(16, 10, rng)], (1, 28, 28))
    model = compress(mlp, "rbnn", x_train=x_train[:1000], y_train=y_train[:1000],
                     x_test=x_test, y_test=y_test, epochs=1, rounds=2, slot_bits=8,
                     slot_lr=0.05, progress=False)
    assert model.meta["accuracy"] > 0.5        # trained, not chance (0.1)
    x = model.quantize_input(x_test[:20])
    result = simulate(model, x, fit_config(model, lanes=2, taps=4), simulator="verilator",
                      build_dir=sim_build_dir, seed=14, idle_gap=0.1, back_pressure=0.1)
    assert first_mismatch(model, x, result) is None and result.cycles_match
