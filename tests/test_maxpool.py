"""The max-pool unit (``shiftpool.hw.controller.maxpool``) in Amaranth's simulator:
random channel-grouped maps of activation words read window by window (four beats,
one word each), with idle cycles between any two read beats, against the golden
``shiftpool.sw.schemes.golden.maxpool2``; each window's maxima are written one cycle
after its last beat: the whole word (grouped output) or one chosen lane into one
chosen lane (flat output)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import memory
from amaranth.sim import Simulator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.controller.maxpool import MaxPool, act_word_layout
from shiftpool.hw.program import POOL_WINDOW, act_words
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
    groups = -(-c // taps)
    fmap = rng.integers(0, 1 << cfg.act_bits, size=(1, c, h, w))
    want = maxpool2(fmap)[0]
    # The map in words: word g*h*w + y*w + x holds channels g*taps .. at (y, x); the
    # lanes past the last channel hold noise, which a flat output never picks.
    lanes = rng.integers(0, 1 << cfg.act_bits, size=(groups * taps, h * w))
    lanes[:c] = fmap[0].reshape(c, h * w)
    words = lanes.reshape(groups, taps, h * w).transpose(0, 2, 1).reshape(-1, taps)
    beats, outputs = [], []
    units = [(ch // taps, ch % taps) for ch in range(c)] if flat else [(g, 0) for g in
                                                                          range(groups)]
    for (g, sel), y, x in ((u, y, x) for u in units for y in range(h // 2)
                           for x in range(w // 2)):
        base = g * h * w + 2 * y * w + 2 * x
        addr, lane = (int(rng.integers(0, act_words(cfg))), int(rng.integers(0, taps)))
        beats += [{"base": base, "phase": p, "addr": addr, "lane": lane, "sel": sel}
                  for p in range(POOL_WINDOW)]
        if flat:
            outputs.append((addr, 1 << lane, int(want[g * taps + sel, y, x])))
        else:
            chans = [int(want[g * taps + j, y, x]) if g * taps + j < c else None
                     for j in range(taps)]
            outputs.append((addr, (1 << taps) - 1, chans))
    harness = Harness(cfg, [list(map(int, row)) for row in words]
                      + [[0] * taps] * (act_words(cfg) - len(words)))
    dut = harness.dut
    got, last_beat = [], []

    async def bench(ctx):
        ctx.set(dut.in_width, w)
        ctx.set(dut.flat, flat)
        pending = list(beats)
        cycle = 0
        while pending or len(got) < len(outputs):
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
    assert len(got) == len(outputs), where
    for (_, addr, en, data), (want_addr, want_en, value) in zip(got, outputs, strict=True):
        assert (addr, en) == (want_addr, want_en), where
        if flat:
            lane = want_en.bit_length() - 1
            assert data[lane] == value, where
        else:
            assert [v for v, ch in zip(data, value, strict=True) if ch is not None] == \
                [ch for ch in value if ch is not None], where
    assert [t for t, _, _, _ in got] == [t + 1 for t in last_beat], where
