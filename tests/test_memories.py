# amaranth: UnusedElaboratable=no
"""The single-port memory (``shiftpool.hw.memories``) in Amaranth's simulator against
a Python list, and its SPRAM choice per platform. (Its SPRAM mapping is checked at
gate level, tests/test_gatelevel.py, and in the board build, tests/test_boards.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator
from shiftpool.boards.registry import get_board
from shiftpool.hw.memories import SinglePortMemory, has_spram, spram_blocks


@pytest.mark.parametrize("seed", [1, 2])
def test_reads_see_the_last_write_and_hold(seed):
    """Random reads, writes and idle cycles: a read returns the row last written there
    (0 before any write) from the next cycle on, and holds until the next read."""
    rng = np.random.default_rng(seed)
    depth, width = 37, 13
    dut = SinglePortMemory(shape=width, depth=depth)
    model = [0] * depth

    async def bench(ctx):
        expect = 0
        for _ in range(400):
            op = rng.choice(["read", "write", "idle"])
            addr = int(rng.integers(depth))
            value = int(rng.integers(1 << width))
            ctx.set(dut.addr, addr)
            ctx.set(dut.rd_en, op == "read")
            ctx.set(dut.wr_en, op == "write")
            ctx.set(dut.wr_data, value)
            await ctx.tick()
            if op == "write":
                model[addr] = value
            else:
                if op == "read":
                    expect = model[addr]
                assert ctx.get(dut.rd_data) == expect, f"seed {seed}: {op} {addr}"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_write_wins_over_a_read_in_the_same_cycle():
    dut = SinglePortMemory(shape=data.ArrayLayout(4, 2), depth=4)

    async def bench(ctx):
        ctx.set(dut.addr, 2)
        ctx.set(dut.wr_data, [3, 5])
        ctx.set(dut.wr_en, 1)
        ctx.set(dut.rd_en, 1)
        await ctx.tick()
        ctx.set(dut.wr_en, 0)
        await ctx.tick()
        assert ctx.get(dut.rd_data) == [3, 5]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_spram_only_on_the_ultraplus():
    assert has_spram(get_board("icebreaker").make_platform())
    assert not has_spram(get_board("ulx3s-85f").make_platform())
    assert not has_spram(None)
    assert spram_blocks(40, 257) == 3 and spram_blocks(16, 16384) == 1
    assert spram_blocks(64, 16385) == 8


def test_depth_is_checked():
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        SinglePortMemory(shape=8, depth=0)
