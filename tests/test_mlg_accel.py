"""MLG in the accelerator: the controller's generate phase drives the weight generator
(``hw/controller/generate.py``), the in-situ engine consumes the generated rows, and
every output and cycle count equals the golden model's and the cycle model's.

Random MLG models (``sw/model/randmodel.random_mlg_model``: levels on and off by a coin
per layer, conv layers reading grouped and im2col maps, dense layers, max-pool) on
random engine sizes and widths, in Amaranth's simulator, Icarus and Verilator; the
trained digits model on both simulators and on the iCE40 netlist.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from shiftpool.hw.config import ConfigError
from shiftpool.sim.kit import seeds
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import compile_model, map_layout
from shiftpool.sw.model.randmodel import random_mlg_model
from test_accelerator import Case, check_case


def mlg_case(seed: int):
    """A random MLG model, configuration and inputs; every choice comes from ``seed``."""
    rng = np.random.default_rng(seed)
    act_bits = int(rng.integers(2, 9))
    first = int(rng.integers(1, 5))
    model = random_mlg_model(
        rng, act_bits=act_bits, input_shape=(first, int(rng.integers(3, 6)), 4),
        convs=tuple(int(c) for c in rng.integers(2, 7, size=int(rng.integers(1, 3)))),
        pool=bool(rng.random() < 0.5), dense=(int(rng.integers(2, 7)),),
        qb=int(rng.integers(2, 5)), qu=int(rng.integers(2, 7)), qv=int(rng.integers(2, 5)),
        bi=int(rng.integers(1, 4)), bc=int(rng.integers(1, 7)))
    config = fit_config(model, lanes=int(rng.integers(1, 4)),
                        taps=int(rng.choice([1, 2, 3, 4, 5, 8])))
    x = rng.integers(0, 1 << act_bits, size=(2,) + tuple(model.input_shape))
    levels = [(layer.kind, int(layer.mlg_b is not None), int(layer.mlg_v is not None))
              for layer in model.layers if layer.is_mac]
    what = (f"seed {seed}: levels {levels}, qb/qu/qv {model.qb}/{model.qu}/{model.qv}, "
            f"lanes {config.lanes}, taps {config.taps}, act_bits {act_bits}")
    return model, config, x, what


AMARANTH_SEEDS = seeds(14, start=1600)


@pytest.mark.parametrize("seed", AMARANTH_SEEDS)
def test_random_mlg_models_run_bit_exact_in_amaranth(seed):
    """The whole accelerator with the in-situ engine, in Amaranth's simulator, random
    stream timing: outputs equal the golden model's, cycles the cycle model's."""
    model, config, x, what = mlg_case(seed)
    print(what)
    check_case(Case(seed, model, config, x, idle_gap=0.3, back_pressure=0.3))


def test_mlg_cases_cover_the_space():
    """The random cases have every combination of levels, conv layers read grouped and
    flat (im2col), several lanes and taps."""
    levels, layouts, sizes = set(), set(), set()
    for seed in AMARANTH_SEEDS:
        model, config, _, _ = mlg_case(seed)
        image = compile_model(model, config)
        for i, layer in enumerate(model.layers):
            if layer.is_mac:
                levels.add((layer.mlg_b is not None, layer.mlg_v is not None))
                layouts.add((layer.kind, map_layout(model, i, image.im2col)))
        sizes.add((config.lanes > 1, config.taps > 1))
    assert levels == {(False, False), (False, True), (True, False), (True, True)}
    assert {("conv3x3", "grouped"), ("conv3x3", "im2col"), ("dense", "flat")} <= layouts
    assert (True, True) in sizes


def test_only_the_bases_are_loaded():
    """The host loads the generator's stores, not weight rows: the in-situ engine's
    accelerator has no weight region, and the stores hold what the model stores."""
    model, config, _, _ = mlg_case(1601)
    image = compile_model(model, config)
    assert image.memory_map()["weights"]["depth"] == 0 and not image.regions["weights"]
    stored = sum(int(np.asarray(getattr(layer, name)).size)
                 for layer in model.layers if layer.is_mac
                 for name in ("mlg_b", "mlg_u", "mlg_w1", "mlg_v")
                 if getattr(layer, name) is not None)
    assert sum(len(image.regions[f"mlg_{n}"]) for n in ("v", "u", "b", "w1")) > 0
    assert stored > 0


def test_a_row_buffer_too_small_names_the_field():
    model, config, _, _ = mlg_case(1602)
    small = type(config).from_dict(dict(config.as_dict(), weight_depth=1))
    with pytest.raises(ConfigError, match=re.escape("config field 'weight_depth' = 1 is too "
                                                    "small: layer")):
        compile_model(model, small)


SIMULATORS = [
    pytest.param("icarus", marks=[pytest.mark.icarus, pytest.mark.slow]),
    pytest.param("verilator", marks=[pytest.mark.verilator, pytest.mark.slow]),
]


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_random_mlg_configurations_bit_exact(simulator, sim_build_dir):
    """Two random MLG configurations per simulator, random stream timing."""
    from shiftpool.sim.flow import first_mismatch, simulate

    for seed in seeds(2, start=1650 if simulator == "icarus" else 1660):
        model, config, x, what = mlg_case(seed)
        result = simulate(model, x, config, simulator=simulator, build_dir=sim_build_dir,
                          seed=seed, idle_gap=0.3, back_pressure=0.3)
        assert first_mismatch(model, x, result) is None, f"{what}, {simulator}"
        assert result.cycles_match, (f"{what}, {simulator}: {result.cycles} != "
                                     f"{result.predicted_cycles}")


@pytest.fixture(scope="module")
def digits_mlg(digits_float, digits_data):
    """The digits CNN compressed with MLG at the default knobs (Bi 2, Bc 44: level 1 on
    conv2 only, level 2 on the dense layer only, by the level rules), 2 epochs."""
    from shiftpool.sw.schemes.compress import compress

    x_train, y_train, x_test, y_test = digits_data
    return compress(digits_float, "mlg", x_train=x_train, y_train=y_train, x_test=x_test,
                    y_test=y_test, epochs=2, progress=False)


@pytest.mark.parametrize("simulator, images", [
    pytest.param("verilator", 360, marks=[pytest.mark.verilator, pytest.mark.slow]),
    pytest.param("icarus", 8, marks=[pytest.mark.icarus, pytest.mark.slow]),
])
def test_digits_mlg_model_bit_exact(digits_mlg, digits_data, simulator, images,
                                    sim_build_dir):
    """The trained digits MLG model on the test split (the whole split on Verilator, a
    slice on Icarus), 2 lanes x 4 taps: every output and cycle count as the golden and
    cycle models say; levels on and off both occur."""
    from shiftpool.sim.flow import first_mismatch, simulate

    macs = [layer for layer in digits_mlg.layers if layer.is_mac]
    assert {layer.mlg_b is not None for layer in macs} == {True, False}
    assert {layer.mlg_v is not None for layer in macs} == {True, False}
    x = digits_mlg.quantize_input(digits_data[2][:images])
    config = fit_config(digits_mlg, lanes=2, taps=4)
    result = simulate(digits_mlg, x, config, simulator=simulator, build_dir=sim_build_dir,
                      seed=17, idle_gap=0.1, back_pressure=0.1)
    assert first_mismatch(digits_mlg, x, result) is None, simulator
    assert result.cycles_match and len(result.rtl) == images


@pytest.mark.icarus
@pytest.mark.synth
@pytest.mark.slow
def test_random_mlg_netlist_bit_exact(sim_build_dir):
    """The iCE40 netlist of an in-situ accelerator (yosys, cell models on Icarus) for a
    random MLG model with both levels in use, two inputs (the digits model's netlist
    took 93 s for one image; this one's inferences are a few thousand cycles)."""
    from shiftpool.sim.flow import first_mismatch
    from shiftpool.sim.gatelevel import simulate

    seed = next(s for s in AMARANTH_SEEDS if _both_levels(mlg_case(s)[0]))
    model, config, x, what = mlg_case(seed)
    result = simulate(model, x, config, build_dir=sim_build_dir, seed=seed,
                      idle_gap=0.2, back_pressure=0.2)
    assert first_mismatch(model, x, result) is None, what
    assert result.cycles_match, what


def _both_levels(model) -> bool:
    return any(layer.mlg_b is not None and layer.mlg_v is not None
               for layer in model.layers if layer.is_mac)


@pytest.mark.icarus
@pytest.mark.slow
def test_demo_puts_mlg_beside_int8(tmp_path, capsys):
    """``demo --scheme mlg``: MLG and int8 of the digits CNN through the RTL (Icarus),
    each equal to its golden model with the cycle model's cycles; per layer the levels
    and the generate phase's share of the cycles; the bits loaded against int8's."""
    import json

    from shiftpool.cli import main

    code = main(["demo", "--scheme", "mlg", "--simulator", "icarus", "--samples", "6",
                 "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--json",
                 str(tmp_path / "demo.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "demo.json").read_text())
    rows = report["rows"]
    assert [(r["scheme"], r["engine"]) for r in rows] == [("mlg", "insitu"), ("int8", "int8")]
    assert all(r["equal"] == r["n"] == 6 and r["cycles_match"] for r in rows), rows
    layers = report["mlg_layers"]
    assert [(la["layer"], la["Bi"] > 0, la["Bc"] > 0) for la in layers] == [
        (0, False, False), (2, True, False), (4, False, True)]
    mlg = rows[0]
    assert sum(la["layer_cycles"] for la in layers) < mlg["cycles"]      # and the max-pools
    for la in layers:
        assert 0 < la["generate_cycles"] < la["layer_cycles"]
        assert re.search(rf"^  layer {la['layer']} .* generate +{la['generate_cycles']} of "
                         rf"+{la['layer_cycles']} cycles$", out, re.M), out
    assert report["mlg_device_bits"]["loaded"] < report["int8_loaded_bits"]
    assert "cycles match the cycle model: True" in out


@pytest.mark.verilator
@pytest.mark.slow
def test_driver_streams_the_bases_to_a_simulated_device(digits_mlg, digits_data,
                                                        sim_build_dir):
    """The host driver loads the digits MLG model into the simulated device over TCP
    (only the generator's stores, the taps, biases and program: no weight rows),
    verifies it by reading it back, and runs test images: outputs as the golden
    model's, cycles as the cycle model's."""
    from shiftpool.sim.serve import serve_sim
    from shiftpool.sw.compile.cycles import inference_cycles
    from shiftpool.sw.host.driver import Device
    from shiftpool.sw.schemes import golden

    x = digits_mlg.quantize_input(digits_data[2][:4])
    with serve_sim(digits_mlg, lanes=2, taps=4, build_dir=sim_build_dir) as server:
        with Device(server.url, progress=False) as dev:
            report = dev.load(digits_mlg)
            outputs, cycles = dev.run(x)
            image = dev.image
    assert report.verified
    assert not image.regions["weights"] and image.regions["mlg_w1"]
    assert np.array_equal(outputs, golden.run(digits_mlg, x))
    assert cycles.tolist() == [inference_cycles(image)] * len(x)


def test_generated_width_is_the_widest_layer_can_reach():
    """``fit_config`` sizes the generated weights for the widest layer (from the widths
    and basis sizes alone), the compiler refuses one bit less naming the field, and a
    layer with both levels at the extremes reaches that width (so it is not loose)."""
    from shiftpool.sw.compile.mlg_layout import generated_bits
    from shiftpool.sw.model.file import mlg_weight

    seed = next(s for s in AMARANTH_SEEDS if _both_levels(mlg_case(s)[0]))
    model, config, _, _ = mlg_case(seed)
    macs = [layer for layer in model.layers if layer.is_mac]
    widest = max(generated_bits(model, layer) for layer in macs)
    assert config.mlg_w_width == config.code_width == widest
    narrow = type(config).from_dict(dict(config.as_dict(), mlg_w_bits=widest - 1))
    with pytest.raises(ConfigError, match=re.escape(f"config field 'mlg_w_bits' = {widest - 1} "
                                                    f"is too small: layer")):
        compile_model(model, narrow)
    layer = next(la for la in macs if la.mlg_b is not None and la.mlg_v is not None)
    top = {name: (1 << q) - 1 for name, q in (("qb", model.qb), ("qu", model.qu),
                                               ("qv", model.qv))}
    layer.mlg_u = np.full_like(layer.mlg_u, top["qu"])
    layer.mlg_b = np.full_like(layer.mlg_b, top["qb"])
    layer.mlg_v = np.full_like(layer.mlg_v, -top["qv"])
    w = int(np.abs(mlg_weight(layer)).max())
    assert w.bit_length() + 1 == generated_bits(model, layer)
