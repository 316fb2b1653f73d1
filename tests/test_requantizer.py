# amaranth: UnusedElaboratable=no
"""The requantizer (``shiftpool.hw.requantizer``) against the golden model's
``requantize``, in Amaranth's simulator, with an idle source and a stalling sink."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.requantizer import Requantizer
from shiftpool.sw.schemes.golden import requantize


def random_cases(rng, config: AcceleratorConfig, n: int):
    """Values over the whole accumulator range (extremes and halves included) and
    shifts over the whole shift range."""
    lo, hi = -(1 << (config.acc_width - 1)), (1 << (config.acc_width - 1)) - 1
    values = rng.integers(lo, hi + 1, size=n)
    shifts = rng.integers(0, config.max_shift + 1, size=n)
    pick = rng.random(n)
    values = np.where(pick < 0.1, lo, np.where(pick > 0.9, hi, values))
    # exact halves: v = (2m + 1) * 2**(s-1)
    halves = (2 * rng.integers(-50, 50, size=n) + 1) << np.maximum(shifts - 1, 0)
    values = np.where((pick > 0.4) & (pick < 0.6) & (shifts > 0), halves, values)
    return [(int(v), int(s)) for v, s in zip(values, shifts, strict=True)
            if lo <= v <= hi]


def simulate(config: AcceleratorConfig, cases, seed: int, idle: float, stall: float):
    dut = Requantizer(config)
    rng = np.random.default_rng(seed)
    got = []

    async def source(ctx):
        for value, shift in cases:
            while rng.random() < idle:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.payload, {"value": value, "shift": shift})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        sink_rng = np.random.default_rng(seed + 1)
        waited = 0
        while len(got) < len(cases):
            ready = int(sink_rng.random() >= stall)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                got.append(int(payload))
            waited += 1
            assert waited < 100 * len(cases) + 100, "requantizer stopped answering"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return got


@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
@pytest.mark.parametrize("seed", range(6))
def test_requantizer_matches_golden(seed, rounding):
    rng = np.random.default_rng(seed)
    config = AcceleratorConfig(act_bits=int(rng.integers(2, 10)),
                               max_fan_in=int(rng.integers(1, 300)),
                               exp_bits=int(rng.integers(1, 4)), rounding=rounding)
    cases = random_cases(rng, config, 150)
    got = simulate(config, cases, seed, idle=0.3, stall=0.3)
    expected = [int(requantize(np.array(v), s, config.act_bits, rounding)) for v, s in cases]
    assert got == expected, f"seed {seed} {rounding}"


@pytest.mark.parametrize("seed", range(3))
def test_golden_half_even_is_numpys_round(seed):
    """``requantize(..., "half_even")`` is ``clip(np.round(v / 2**s))`` (numpy rounds
    halves to even), computed in floats: exact for these magnitudes."""
    rng = np.random.default_rng(seed)
    shifts = rng.integers(0, 12, 2000)
    v = rng.integers(-(1 << 14), 1 << 14, 2000)
    ties = (2 * rng.integers(-200, 200, 2000) + 1) << np.maximum(shifts - 1, 0)
    v = np.where((rng.random(2000) < 0.5) & (shifts > 0), ties, v)
    act_bits = int(rng.integers(2, 10))
    for value, shift in zip(v.tolist(), shifts.tolist(), strict=True):
        expect = int(np.clip(np.round(value / 2.0 ** shift), 0, (1 << act_bits) - 1))
        assert int(requantize(np.array(value), shift, act_bits, "half_even")) == expect, (
            f"seed {seed}: v {value} shift {shift}")


def test_requantizer_hand_cases():
    config = AcceleratorConfig(act_bits=4)
    cases = [(5, 1), (-5, 1), (7, 1), (6, 2), (-1, 0), (16, 0), (15, 0), (1000, 3), (12, 3)]
    # 5/2=2.5 -> 3; -5/2=-2.5 -> -2 -> 0; 7/2=3.5 -> 4; 6/4=1.5 -> 2; -1 -> 0;
    # 16 -> 15 (saturate); 15; 1000/8=125 -> 15; 12/8=1.5 -> 2
    assert simulate(config, cases, seed=0, idle=0.0, stall=0.0) == [3, 0, 4, 2, 0, 15, 15, 15, 2]
    # Halves to even: 5/2 = 2.5 -> 2; 7/2 = 3.5 -> 4; 6/4 = 1.5 -> 2; 10/4 = 2.5 -> 2;
    # 9/8 = 1.125 -> 1; 31/2 = 15.5 -> 16 -> 15 (saturate); 29/2 = 14.5 -> 14
    even = AcceleratorConfig(act_bits=4, rounding="half_even")
    cases = [(5, 1), (7, 1), (6, 2), (10, 2), (9, 3), (31, 1), (29, 1)]
    assert simulate(even, cases, seed=0, idle=0.0, stall=0.0) == [2, 4, 2, 2, 1, 15, 14]
