"""The generated Verilog of the whole accelerator in cocotb, on Icarus and Verilator:
outputs bit-exact against the golden model, cycles exactly as the cycle model says.

Every digits model (FLightNN, LightNN-2, int8, weight pools) runs its whole test split
on Verilator and a slice of it on Icarus (about 100x slower on this design: Icarus
spends nearly all its time evaluating the design), with seeded idle gaps on the input
streams and back-pressure on the output stream; random models and configurations run
on both, with more of both.
"""

from __future__ import annotations

import numpy as np
import pytest
from shiftpool.sim.flow import first_mismatch, simulate
from shiftpool.sw.compile.cycles import pool_row_accepts
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.model.randmodel import random_model

#: Test images the Icarus runs of the digits models use.
ICARUS_SLICE = 24
#: Idle-gap and back-pressure chance of the digits runs (the seed is the test's).
DIGITS_TIMING = dict(seed=12, idle_gap=0.1, back_pressure=0.1)
#: The digits test split's size.
DIGITS_SPLIT = 360


def assert_bit_exact(model, x, result, what: str) -> None:
    mismatch = first_mismatch(model, x, result)
    assert mismatch is None, f"{what}: {mismatch}"
    assert result.cycles_match, (f"{what}: RTL cycles {sorted(set(result.cycles.tolist()))} "
                                 f"!= cycle model {result.predicted_cycles}")


def assert_table_build_cycles(model, config, result, what: str) -> None:
    """Every pool row was taken when the cycle model says (each builds a table column,
    which holds the load port: 257 cycles with the full table, 17 with half tables)."""
    rows = result.run.pool_rows
    assert len(rows) == len(model.pool), what
    offered, moved = rows[:, 0].tolist(), rows[:, 1].tolist()
    assert moved == pool_row_accepts(config, offered), f"{what}: pool rows {rows.tolist()}"
    # Back to back (no idle gap before a row), rows are one build apart.
    per_row = {"full": 257, "half": 17}[config.pool_table]
    assert all(b - a == per_row for a, b, o in zip(moved, moved[1:], offered[1:], strict=False)
               if o <= a + 1), f"{what}: pool rows {rows.tolist()}"


@pytest.mark.parametrize("simulator", [
    pytest.param("verilator", marks=[pytest.mark.verilator, pytest.mark.slow]),
    pytest.param("icarus", marks=[pytest.mark.icarus, pytest.mark.slow]),
])
@pytest.mark.parametrize("scheme", ["flightnn", "lightnn2", "int8"])
def test_digits_models_bit_exact(scheme, simulator, digits_models, digits_data,
                                 sim_build_dir):
    model = digits_models[scheme]
    x_test = digits_data[2]
    if simulator == "icarus":
        x_test = x_test[:ICARUS_SLICE]
    x = model.quantize_input(x_test)
    config = fit_config(model, lanes=4, taps=8)
    result = simulate(model, x, config, simulator=simulator, build_dir=sim_build_dir,
                      **DIGITS_TIMING)
    assert_bit_exact(model, x, result, f"{scheme} on {simulator}")
    assert len(result.rtl) == (DIGITS_SPLIT if simulator == "verilator" else ICARUS_SLICE)


def random_case(seed: int):
    """A random model, configuration and inputs; every choice comes from ``seed``."""
    rng = np.random.default_rng(seed)
    scheme = str(rng.choice(["flightnn", "int8"]))
    act_bits = int(rng.integers(3, 9))
    model = random_model(
        rng, scheme=scheme, act_bits=act_bits, exp_bits=int(rng.integers(1, 4)),
        k_mode=str(rng.choice(["k1", "k2", "mixed"])),
        input_shape=(int(rng.integers(1, 4)), int(rng.integers(3, 8)), int(rng.integers(3, 8))),
        convs=tuple(int(c) for c in rng.integers(1, 7, size=int(rng.integers(1, 3)))),
        pool=bool(rng.integers(0, 2)),
        dense=tuple(int(c) for c in rng.integers(2, 9, size=int(rng.integers(1, 3)))))
    config = fit_config(model, lanes=int(rng.integers(1, 6)), taps=int(rng.integers(4, 10)))
    x = rng.integers(0, 1 << act_bits, size=(3,) + tuple(model.input_shape))
    return model, config, x


@pytest.mark.parametrize("simulator", [
    pytest.param("verilator", marks=[pytest.mark.verilator, pytest.mark.slow]),
    pytest.param("icarus", marks=[pytest.mark.icarus, pytest.mark.slow]),
])
@pytest.mark.parametrize("seed", [101, 202, 303])
def test_random_configurations_bit_exact(seed, simulator, sim_build_dir):
    model, config, x = random_case(seed)
    what = (f"seed {seed}, {simulator}, {model.scheme}, lanes {config.lanes}, taps "
            f"{config.taps}, act_bits {config.act_bits}, layers "
            f"{[(layer.kind, layer.out_shape) for layer in model.layers]}")
    result = simulate(model, x, config, simulator=simulator, build_dir=sim_build_dir,
                      seed=seed, idle_gap=0.3, back_pressure=0.3)
    assert_bit_exact(model, x, result, what)


# -- the weight-pool engine -------------------------------------------------------------

#: (pool size, run-time precision, test images) per simulator: full and reduced
#: precision, the smallest and largest pools; Verilator runs the whole split.
POOL_RUNS = {
    "verilator": [(64, 8, DIGITS_SPLIT), (64, 3, DIGITS_SPLIT), (16, 1, DIGITS_SPLIT),
                  (128, 5, DIGITS_SPLIT)],
    "icarus": [(64, 3, 3), (16, 8, 2)],
}


@pytest.mark.parametrize("simulator,size,bits,images", [
    pytest.param(sim, size, bits, images, marks=[getattr(pytest.mark, sim), pytest.mark.slow],
                 id=f"{sim}-S{size}-bits{bits}")
    for sim, runs in POOL_RUNS.items() for size, bits, images in runs
])
def test_digits_pool_models_bit_exact(simulator, size, bits, images, digits_pool_models,
                                      digits_data, sim_build_dir):
    model = digits_pool_models[size]
    assert [layer.is_pool for layer in model.layers if layer.is_mac] == [False, True, True]
    x = model.quantize_input(digits_data[2][:images])
    config = fit_config(model, lanes=2)
    assert (config.engine, config.pool_size) == ("pool", size)
    result = simulate(model, x, config, simulator=simulator, build_dir=sim_build_dir,
                      bits=bits, **DIGITS_TIMING)
    assert_bit_exact(model, x, result, f"pool S={size}, {bits} bits on {simulator}")
    assert len(result.rtl) == images


def random_pool_case(seed: int, pool_table: str = "full", all_pooled: bool = False):
    """A random pool model (int8 first layer, pooled conv and dense layers; with
    ``all_pooled`` 8 input channels, so the first layer is pooled too), lanes, pool
    size, entry width and precision; every choice comes from ``seed``. Half tables get
    entries narrow enough that the table is narrowed (``k > 0``)."""
    rng = np.random.default_rng(seed)
    act_bits = int(rng.integers(3, 9))
    pool_bits = int(rng.integers(3, 9))
    lut_bits = (int(rng.integers(3, pool_bits + 1)) if pool_table == "half"
                else int(rng.integers(6, 17)))
    model = random_model(
        rng, scheme="pool", act_bits=act_bits,
        input_shape=(8 if all_pooled else int(rng.integers(1, 4)), int(rng.integers(3, 6)),
                     int(rng.integers(3, 6))),
        convs=(8, int(rng.choice([8, 16]))), pool=bool(rng.integers(0, 2)),
        dense=(int(rng.integers(2, 9)),), pool_size=int(rng.choice([4, 8, 16, 32])),
        pool_bits=pool_bits, lut_bits=lut_bits, pool_table=pool_table)
    # Every other seed runs the pooled layers in precompute mode (lanes: a power of two).
    mode = "precompute" if seed % 2 else "direct"
    lanes = int(rng.choice([1, 2, 4])) if mode == "precompute" else int(rng.integers(1, 5))
    config = fit_config(model, lanes=min(lanes, len(model.pool)), mode=mode)
    x = rng.integers(0, 1 << act_bits, size=(2,) + tuple(model.input_shape))
    return model, config, x, int(rng.integers(1, act_bits + 1)), mode


@pytest.mark.parametrize("simulator", [
    pytest.param("verilator", marks=[pytest.mark.verilator, pytest.mark.slow]),
    pytest.param("icarus", marks=[pytest.mark.icarus, pytest.mark.slow]),
])
@pytest.mark.parametrize("seed", [404, 505])
def test_random_pool_configurations_bit_exact(seed, simulator, sim_build_dir):
    model, config, x, bits, mode = random_pool_case(seed)
    what = (f"seed {seed}, {simulator}, pool S {config.pool_size}, lut_bits "
            f"{config.lut_bits}, lanes {config.lanes}, act_bits {config.act_bits}, bits {bits}, "
            f"{mode}, layers {[(layer.kind, layer.out_shape) for layer in model.layers]}")
    assert config.precompute == (mode == "precompute")
    result = simulate(model, x, config, simulator=simulator, build_dir=sim_build_dir,
                      seed=seed, idle_gap=0.3, back_pressure=0.3, bits=bits, mode=mode)
    assert_bit_exact(model, x, result, what)
    assert_table_build_cycles(model, config, result, what)


@pytest.mark.parametrize("simulator", [
    pytest.param("verilator", marks=[pytest.mark.verilator, pytest.mark.slow]),
    pytest.param("icarus", marks=[pytest.mark.icarus, pytest.mark.slow]),
])
def test_all_pooled_model_without_int8_path_bit_exact(simulator, sim_build_dir):
    """Every MAC layer pooled: the engine is built without its int8 path and the
    weights region (``int8_path = false``), and still equals the golden model."""
    seed = 808
    model, config, x, bits, mode = random_pool_case(seed, all_pooled=True)
    assert all(layer.is_pool for layer in model.layers if layer.is_mac)
    assert config.int8_path is False
    what = (f"seed {seed}, {simulator}, all pooled, lanes {config.lanes}, bits {bits}, "
            f"{mode}, layers {[(layer.kind, layer.out_shape) for layer in model.layers]}")
    result = simulate(model, x, config, simulator=simulator, build_dir=sim_build_dir,
                      seed=seed, idle_gap=0.3, back_pressure=0.3, bits=bits, mode=mode)
    assert_bit_exact(model, x, result, what)


@pytest.mark.parametrize("simulator, seed", [
    pytest.param("verilator", 606, marks=[pytest.mark.verilator, pytest.mark.slow]),
    pytest.param("verilator", 707, marks=[pytest.mark.verilator, pytest.mark.slow]),
    pytest.param("icarus", 707, marks=[pytest.mark.icarus, pytest.mark.slow]),
])
def test_random_half_table_configurations_bit_exact(seed, simulator, sim_build_dir):
    """Half tables (two 16-entry tables per vector, summed), narrowed entries, direct
    (even seed) and precompute mode (odd seed; Icarus runs that one, the larger
    design, as the default run's budget allows)."""
    model, config, x, bits, mode = random_pool_case(seed, pool_table="half")
    from shiftpool.sw.schemes.pool_golden import model_lut

    what = (f"seed {seed}, {simulator}, half tables, pool S {config.pool_size}, pool_bits "
            f"{config.pool_bits}, lut_bits {config.lut_bits}, lanes {config.lanes}, act_bits "
            f"{config.act_bits}, bits {bits}, {mode}, layers "
            f"{[(layer.kind, layer.out_shape) for layer in model.layers]}")
    assert config.pool_table == "half" and model_lut(model)[1] > 0, what
    result = simulate(model, x, config, simulator=simulator, build_dir=sim_build_dir,
                      seed=seed, idle_gap=0.3, back_pressure=0.3, bits=bits, mode=mode)
    assert_bit_exact(model, x, result, what)
    assert_table_build_cycles(model, config, result, what)
