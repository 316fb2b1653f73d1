"""The max-pool unit (``shiftpool.hw.controller.maxpool``) in Amaranth's simulator:
random channel-grouped maps of activation words read window by window (four beats,
one word each), with idle cycles between any two read beats, against the golden
``shiftpool.sw.schemes.golden.maxpool2``; each window's maxima are written one cycle
after its last beat as a whole word (grouped output), or lane by lane from the
second cycle after it into the flat map's words and lanes (flat output)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import memory
from amaranth.sim import Simulator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.controller.maxpool import MaxPool, act_word_layout
from shiftpool.hw.program import POOL_WINDOW, act_words, flat_phases
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
        m.submodules.act = mem = memory.Memory(shape=act_word_layout(cfg),
                                               depth=act_words(cfg), init=self.words)
        port = mem.read_port()
        m.d.comb += [port.addr.eq(dut.read_addr), dut.word.eq(port.data)]
        return m


@pytest.mark.parametrize("taps", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("seed", range(2))
def test_maxima_and_timing(taps, flat, seed):
    rng = np.random.default_rng([seed, taps, flat])
    cfg = AcceleratorConfig(taps=taps, act_bits=int(rng.integers(2, 9)), act_depth=256 * taps,
                            max_dim=8)
    c, h, w = int(rng.integers(1, 6)), 2 * int(rng.integers(1, 4)), 2 * int(rng.integers(1, 5))
    groups, area = -(-c // taps), (h // 2) * (w // 2)
    fmap = rng.integers(0, 1 << cfg.act_bits, size=(1, c, h, w))
    want = maxpool2(fmap)[0].reshape(c, area)
    # The map in words: word g*h*w + y*w + x holds channels g*taps .. at (y, x); the
    # lanes past the last channel hold noise, which a flat output never writes.
    lanes = rng.integers(0, 1 << cfg.act_bits, size=(groups * taps, h * w))
    lanes[:c] = fmap[0].reshape(c, h * w)
    words = lanes.reshape(groups, taps, h * w).transpose(0, 2, 1).reshape(-1, taps)
    phases = flat_phases(cfg) if flat else POOL_WINDOW
    beats, writes = [], []          # writes: per window, its (addr, en, lane, value)s
    for g, pos in ((g, pos) for g in range(groups) for pos in range(area)):
        y, x = divmod(pos, w // 2)
        count = min(taps, c - g * taps)
        if flat:
            # channel g*taps + k goes to activation (g*taps + k)*area + pos
            addr, lane = divmod(g * taps * area + pos, taps)
            writes.append([(*divmod((g * taps + k) * area + pos, taps),
                            int(want[g * taps + k, pos])) for k in range(count)])
        else:
            addr, lane = g * area + pos, 0
            writes.append([(addr, None, [int(v) for v in want[g * taps:g * taps + count, pos]])])
        beats += [{"base": g * h * w + 2 * y * w + 2 * x, "phase": p, "addr": addr,
                   "lane": lane, "count": count} for p in range(phases)]
    harness = Harness(cfg, [list(map(int, row)) for row in words]
                      + [[0] * taps] * (act_words(cfg) - len(words)))
    dut = harness.dut
    got, last_beat = [], []

    async def bench(ctx):
        ctx.set(dut.in_width, w)
        ctx.set(dut.flat, flat)
        lane_w, lane_l = divmod(area, taps)
        ctx.set(dut.step, {"carry": 1, "lane_w": lane_w, "lane_l": lane_l})
        pending = list(beats)
        cycle = 0
        total = sum(map(len, writes))
        while pending or len(got) < total or not ctx.get(dut.idle):
            send = bool(pending) and rng.random() < 0.7
            if send:
                ctx.set(dut.window.payload, pending[0])
            ctx.set(dut.window.valid, send)
            _, _, valid, pay = await ctx.tick().sample(dut.write.valid, dut.write.payload)
            if send:
                if pending.pop(0)["phase"] == POOL_WINDOW - 1:
                    last_beat.append(cycle)
            if valid:
                got.append((cycle, int(pay.addr), int(pay.en), [int(v) for v in pay.data]))
            cycle += 1
            assert cycle < 5000, "the unit stopped"

    sim = Simulator(harness)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    where = f"seed {seed}, taps {taps}, flat {flat}"
    flat_writes = [x for window in writes for x in window]
    assert len(got) == len(flat_writes), where
    for (_, addr, en, data), want_write in zip(got, flat_writes, strict=True):
        if flat:
            want_addr, want_lane, value = want_write
            assert (addr, en, data[want_lane]) == (want_addr, 1 << want_lane, value), where
        else:
            want_addr, _, values = want_write
            assert (addr, en, data[:len(values)]) == (want_addr, (1 << taps) - 1, values), where
    # Grouped: one cycle after the window's last read; flat: lane k, 2 + k cycles after.
    when = [t + (2 + k if flat else 1) for t, window in zip(last_beat, writes, strict=True)
            for k in range(len(window))]
    assert [t for t, _, _, _ in got] == when, where
