"""The max-pool unit (``shiftpool.hw.controller.maxpool``) in Amaranth's simulator:
random feature maps read window by window, with idle cycles between any two read
beats, against the golden ``shiftpool.sw.schemes.golden.maxpool2``; each maximum is written
one cycle after its window's last beat (``ceil(4 / taps)`` beats per window)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import memory
from amaranth.sim import Simulator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.controller.maxpool import MaxPool, pool_ports
from shiftpool.hw.program import pool_phases
from shiftpool.sw.schemes.golden import maxpool2

CLOCK_PERIOD = 1e-6


class Harness(Elaboratable):
    """The unit reading an activation buffer that holds ``words``."""

    def __init__(self, config, words):
        self.dut = MaxPool(config)
        self.words = words

    def elaborate(self, platform):
        cfg = self.dut.config
        m = Module()
        m.submodules.dut = dut = self.dut
        m.submodules.act = mem = memory.Memory(shape=cfg.act_bits, depth=cfg.act_depth,
                                               init=self.words)
        for j in range(pool_ports(cfg)):
            port = mem.read_port()
            m.d.comb += [port.addr.eq(dut.read_addr[j]), dut.words[j].eq(port.data)]
        return m


@pytest.mark.parametrize("taps", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("seed", range(2))
def test_maxima_and_timing(taps, seed):
    rng = np.random.default_rng(seed * 10 + taps)
    cfg = AcceleratorConfig(taps=taps, act_bits=int(rng.integers(2, 9)), act_depth=256,
                            max_dim=8)
    c, h, w = int(rng.integers(1, 4)), 2 * int(rng.integers(1, 4)), 2 * int(rng.integers(1, 5))
    fmap = rng.integers(0, 1 << cfg.act_bits, size=(1, c, h, w))
    want = maxpool2(fmap).reshape(-1).tolist()
    phases = pool_phases(cfg)
    beats = []
    for out, (ch, y, x) in enumerate(np.ndindex(c, h // 2, w // 2)):
        base = ch * h * w + 2 * y * w + 2 * x
        beats += [{"base": base, "phase": p, "addr": out} for p in range(phases)]
    words = fmap.reshape(-1).tolist()
    harness = Harness(cfg, words + [0] * (cfg.act_depth - len(words)))
    dut = harness.dut
    got, last_beat = [], []

    async def bench(ctx):
        ctx.set(dut.in_width, w)
        pending = list(beats)
        cycle = 0
        while pending or len(got) < len(want):
            send = bool(pending) and rng.random() < 0.7
            if send:
                ctx.set(dut.window.payload, pending[0])
            ctx.set(dut.window.valid, send)
            _, _, valid, addr, value = await ctx.tick().sample(
                dut.write.valid, dut.write.payload.addr, dut.write.payload.data)
            if send:
                if pending.pop(0)["phase"] == phases - 1:
                    last_beat.append(cycle)
            if valid:
                got.append((cycle, addr, value))
            cycle += 1
            assert cycle < 5000, "the unit stopped"

    sim = Simulator(harness)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    assert [(a, v) for _, a, v in got] == list(enumerate(want)), f"seed {seed}, taps {taps}"
    assert [t for t, _, _ in got] == [t + 1 for t in last_beat]
