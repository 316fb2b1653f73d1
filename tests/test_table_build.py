# amaranth: UnusedElaboratable=no
"""The pool engine's table-build unit (``shiftpool.hw.controller.table_build``) in
Amaranth's simulator: load rows of every region with idle gaps, a build sink with
back-pressure; each pool row becomes one build beat with the fields the compiler packed
(``shiftpool.hw.program.pack``)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator
from shiftpool.hw.config import POOL_GROUP, AcceleratorConfig
from shiftpool.hw.controller.table_build import TableBuild
from shiftpool.hw.program import REGIONS, pack, pool_row_fields

CLOCK_PERIOD = 1e-6


@pytest.mark.parametrize("seed", range(4))
def test_pool_rows_become_builds(seed):
    rng = np.random.default_rng(seed)
    cfg = AcceleratorConfig(engine="pool", lanes=2, pool_size=16, pool_bits=int(rng.integers(3, 9)))
    fields = pool_row_fields(cfg)
    lim = 1 << (cfg.pool_bits - 1)
    rows, want = [], []
    for _ in range(30):
        region = int(rng.integers(0, len(REGIONS)))
        addr = int(rng.integers(0, cfg.pool_size))
        values = [int(v) for v in rng.integers(-lim, lim, size=POOL_GROUP)]
        shift = int(rng.integers(0, cfg.pool_bits + 4))
        data = pack(fields, {**{f"v{j}": v for j, v in enumerate(values)}, "shift": shift})
        rows.append({"region": region, "addr": addr, "data": data})
        if REGIONS[region] == "pool":
            want.append((addr, values, shift))
    assert want, "no pool row drawn"
    dut = TableBuild(cfg)
    got, taken = [], []

    async def bench(ctx):
        pending = list(rows)
        offering = False
        for _ in range(2000):
            if not pending and not offering:
                break
            if pending and not offering and rng.random() < 0.7:
                offering = True
                ctx.set(dut.row.payload, pending[0])
            ctx.set(dut.row.valid, offering)
            ready = int(rng.random() < 0.6)
            ctx.set(dut.build.ready, ready)
            _, _, row_ready, valid, index, values, shift = await ctx.tick().sample(
                dut.row.ready, dut.build.valid, dut.build.payload.index,
                dut.build.payload.values, dut.build.payload.shift)
            # A row is taken exactly when the engine could take a build.
            assert row_ready == ready
            if valid and ready:
                got.append((index, [int(v) for v in values], shift))
            if offering and row_ready:
                taken.append(pending.pop(0))
                offering = False

    # The unit is combinational: the bench's clock domain is the harness's.
    top = Module()
    top.domains.sync = ClockDomain()
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    assert taken == rows, f"seed {seed}"
    assert got == want, f"seed {seed}"


def test_needs_a_pool_config():
    with pytest.raises(ValueError, match="pool engine"):
        TableBuild(AcceleratorConfig(engine="int8"))
