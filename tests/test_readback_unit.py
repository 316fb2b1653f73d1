"""The readback unit (``shiftpool.hw.controller.readback``) in Amaranth's simulator:
requests with idle gaps, ``enable`` dropped at random (input words have priority), a
response sink with back-pressure, and read ports that other logic moves whenever the
unit does not drive them. Every byte read back equals that byte of the memory's row,
and its response is offered three cycles after its request was taken."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import memory
from amaranth.sim import Simulator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.controller.readback import Readback
from shiftpool.hw.memory_map import region_depths, region_widths
from shiftpool.hw.program import REGIONS

CLOCK_PERIOD = 1e-6
#: Cycles from a request's acceptance to its response being offered.
LATENCY = 3


class Harness(Elaboratable):
    """The unit in front of one memory per region, holding ``contents``; while the
    unit neither reads nor holds, the ports read ``noise`` (as the issue pipeline's
    addresses would move them)."""

    def __init__(self, config, contents):
        self.dut = Readback(config)
        self.contents = contents
        self.noise = Signal(self.dut.addr.shape().width)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        for name, rows in self.contents.items():
            mem = memory.Memory(shape=dut.rows[name].shape(), depth=len(rows), init=rows)
            m.submodules[name] = mem
            port = mem.read_port()
            m.d.comb += [port.addr.eq(self.noise), port.en.eq(1),
                         dut.rows[name].eq(port.data)]
            with m.If(dut.hold):
                m.d.comb += port.en.eq(0)
            with m.Elif(dut.read):
                m.d.comb += port.addr.eq(dut.addr)
        return m


@pytest.mark.parametrize("engine", ["shiftadd", "pool"])
@pytest.mark.parametrize("seed", range(3))
def test_rows_come_back(engine, seed):
    rng = np.random.default_rng(seed)
    cfg = AcceleratorConfig(engine=engine, lanes=2, taps=8 if engine == "pool" else 2,
                            weight_depth=24, tap_depth=12, bias_depth=5, index_depth=20,
                            pool_size=16, program_depth=4)
    depths, widths = region_depths(cfg), region_widths(cfg)
    contents = {name: [int(v) for v in rng.integers(0, 1 << min(widths[name], 62),
                                                      size=depths[name])]
                for name in REGIONS if depths[name]}
    requests = [(REGIONS.index(name), int(rng.integers(0, len(contents[name]))),
                 int(rng.integers(0, -(-widths[name] // 8))))
                for name in rng.choice(list(contents), size=40)]
    harness = Harness(cfg, contents)
    dut = harness.dut
    taken, answered, offered = [], [], {}

    async def bench(ctx):
        pending = list(requests)
        offering = False
        for cycle in range(3000):
            if not pending and not offering and len(answered) == len(requests):
                break
            if pending and not offering and rng.random() < 0.6:
                offering = True
                region, addr, byte = pending[0]
                ctx.set(dut.readback.req.payload, {"region": region, "addr": addr,
                                                   "byte": byte})
            ctx.set(dut.readback.req.valid, offering)
            ctx.set(dut.enable, int(rng.random() < 0.8))
            ctx.set(dut.readback.resp.ready, int(rng.random() < 0.5))
            ctx.set(harness.noise, int(rng.integers(0, 1 << len(harness.noise))))
            _, _, req_ready, valid, ready, row = await ctx.tick().sample(
                dut.readback.req.ready, dut.readback.resp.valid, dut.readback.resp.ready,
                dut.readback.resp.payload)
            if offering and req_ready:
                taken.append((cycle, pending.pop(0)))
                offering = False
            if valid:
                offered.setdefault(len(answered), cycle)
            if valid and ready:
                answered.append(row)
        else:
            raise AssertionError("the unit stopped answering")

    sim = Simulator(harness)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    want = [contents[REGIONS[code]][addr] >> (8 * byte) & 0xFF for code, addr, byte in requests]
    assert answered == want, f"seed {seed}"
    assert [req for _, req in taken] == requests
    assert [offered[j] for j in range(len(requests))] == [t + LATENCY for t, _ in taken]
