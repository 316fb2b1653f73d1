"""The iCE40 netlist yosys synthesizes for the accelerator, simulated with yosys'
cell models on Icarus under the RTL's bench: outputs bit-exact against the golden
model, cycles exactly as the cycle model says."""

from __future__ import annotations

import numpy as np
import pytest
from shiftpool.hw.accelerator import region_width
from shiftpool.hw.memories import spram_blocks
from shiftpool.sim.flow import first_mismatch
from shiftpool.sim.gatelevel import simulate
from shiftpool.sim.runner import gateware_digest
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.model.randmodel import random_model

pytestmark = [pytest.mark.icarus, pytest.mark.synth, pytest.mark.slow]

#: Digits test images each demo model runs at gate level (one inference on the netlist takes
#: 25-80 s on Icarus under load; the RTL runs all of them).
DIGITS_SLICE = 1


def assert_bit_exact(model, x, result, what: str) -> None:
    mismatch = first_mismatch(model, x, result)
    assert mismatch is None, f"{what}: {mismatch}"
    assert result.cycles_match, (f"{what}: gate-level cycles "
                                 f"{sorted(set(result.cycles.tolist()))} != cycle model "
                                 f"{result.predicted_cycles}")
    assert len(result.rtl) == len(x)


@pytest.mark.parametrize("seed, scheme", [(11, "flightnn"), (12, "int8")])
def test_random_model_netlist_bit_exact(seed, scheme, sim_build_dir):
    rng = np.random.default_rng(seed)
    act_bits = 6
    model = random_model(rng, scheme=scheme, act_bits=act_bits, exp_bits=2,
                         input_shape=(2, 5, 4), convs=(3,), pool=True, dense=(4,))
    config = fit_config(model, lanes=2, taps=4)
    x = rng.integers(0, 1 << act_bits, size=(3,) + tuple(model.input_shape))
    result = simulate(model, x, config, build_dir=sim_build_dir, seed=seed, idle_gap=0.3,
                      back_pressure=0.3)
    assert_bit_exact(model, x, result, f"seed {seed}, {scheme}, 2 lanes x 4 taps")
    # The weights are in SPRAM, as on the iCEBreaker: one block per 16 bits of a row.
    netlist = (sim_build_dir / f"{config.hash}-{gateware_digest()}-gates" / "netlist.v"
               ).read_text()
    assert netlist.count("SB_SPRAM256KA ") == spram_blocks(
        region_width(config, "weights"), config.weight_depth)


@pytest.mark.parametrize("scheme", ["flightnn", "int8"])
def test_digits_demo_netlist_bit_exact(scheme, digits_models, digits_data, sim_build_dir):
    model = digits_models[scheme]
    x = model.quantize_input(digits_data[2][:DIGITS_SLICE])
    config = fit_config(model, lanes=2, taps=4)
    result = simulate(model, x, config, build_dir=sim_build_dir)
    assert_bit_exact(model, x, result, f"digits {scheme}, 2 lanes x 4 taps")


def test_gate_level_job_packs_loads_like_the_accelerator(tmp_path):
    """The gate-level bench packs load beats with the load stream's own widths, also for
    a pool design whose index region is its deepest (the gate-level job once left the
    index and pool depths out of its address width and mis-packed such designs)."""
    from shiftpool.hw.memory_map import region_depths
    from shiftpool.hw.signature import load_layout
    from shiftpool.sim.gatelevel import make_job
    from shiftpool.sw.compile.image import compile_model

    rng = np.random.default_rng(7)
    model = random_model(rng, scheme="pool", act_bits=4, input_shape=(1, 3, 3), convs=(8,),
                         pool=False, dense=(3,), pool_size=4, pool_bits=4, lut_bits=8)
    config = fit_config(model, lanes=1, index_depth=1 << 12)
    depths = region_depths(config)
    assert max(depths, key=depths.get) == "indices"
    x = rng.integers(0, 16, size=(1, 1, 3, 3))
    job = make_job(compile_model(model, config), x, tmp_path / "results.json")
    layout = load_layout(config)
    region, addr = layout.members["region"].width, layout.members["addr"].width
    assert addr == 12
    assert job["load_shifts"] == {"addr": region, "data": region + addr}
