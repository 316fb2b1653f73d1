"""The write-back unit (``shiftpool.hw.controller.writeback``) in Amaranth's simulator:
results offered with random idle gaps, against the golden requantizer
(``shiftpool.sw.schemes.golden.requantize``) and the write-back part of the cycle model (result
``j`` captured at ``max(offered, c_{j-1} + V_{j-1})``, its lane ``k`` written at
``c_j + 3 + k``); channel ``c`` at position ``p`` of a grouped map goes to word
``(c // taps) * area + p``, lane ``c % taps``, of a flat one to activation ``c * area +
p`` (word and lane ``divmod(c*area + p, taps)``)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator
from amaranth.utils import ceil_log2
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.controller.writeback import WRITE_LATENCY, WriteBack
from shiftpool.hw.program import act_words
from shiftpool.sw.compile.image import _out_fields
from shiftpool.sw.schemes.golden import requantize

CLOCK_PERIOD = 1e-6


class Harness(Elaboratable):
    """The unit and a bias memory holding ``bias`` (rows of ``lanes`` values)."""

    def __init__(self, config, bias):
        self.dut = WriteBack(config)
        self.bias = bias

    def elaborate(self, platform):
        cfg = self.dut.config
        m = Module()
        m.submodules.dut = self.dut
        m.submodules.bias = mem = memory.Memory(
            shape=self.dut.bias.data.shape(), depth=cfg.bias_depth,
            init=[[int(v) for v in row] for row in self.bias])
        wiring.connect(m, self.dut.bias, mem.read_port())
        return m


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    lanes = int(rng.integers(1, 5))
    cfg = AcceleratorConfig(lanes=lanes, taps=int(rng.integers(1, 6)), act_depth=256,
                            out_depth=12, bias_depth=6, max_fan_in=16)
    shift = int(rng.integers(0, cfg.max_shift + 1))
    # Values around the activation range after the shift (some clip, most do not),
    # within the accumulator's.
    lim = 1 << min(cfg.sum_log2 - 1, cfg.act_bits + shift)
    bias = rng.integers(-lim // 4, lim, size=(cfg.bias_depth, lanes))
    layout, area = str(rng.choice(["grouped", "flat"])), int(rng.integers(1, 9))
    fields = _out_fields(cfg, layout, area, 0)
    layer = {"shift": shift, "n1": int(rng.integers(1, 12)),
             "channels": int(rng.integers(1, 12)),
             **{name: fields[name] for name in ("carry", "lane_w", "lane_l")}}
    results = []
    for _ in range(int(rng.integers(4, 12))):
        chan, pos = int(rng.integers(0, 12)), int(rng.integers(0, area))
        addr, lane = where(cfg, layout, area, chan, pos)
        results.append({
            "acc": [int(v) for v in rng.integers(-lim // 4, lim, size=lanes)],
            "group": {"chan": chan, "two": int(rng.integers(0, 2)),
                      "bias": int(rng.integers(0, cfg.bias_depth)), "addr": addr,
                      "lane": lane},
            "pos": pos,
        })
    return rng, cfg, bias, layer, results, layout, area


def where(cfg, layout, area, chan, pos):
    """Word and lane of channel ``chan`` at position ``pos`` (the layouts' definition)."""
    if layout == "flat":
        return divmod(chan * area + pos, cfg.taps)
    return (chan // cfg.taps) * area + pos, chan % cfg.taps


def expected(cfg, bias, layer, results, layout, area):
    """Per result: its writes (addr, lane, chan, act, value), lane by lane."""
    out = []
    for r in results:
        g = r["group"]
        limit = layer["channels"] if g["two"] else layer["n1"]
        valid = min(cfg.lanes, max(1, limit - g["chan"]))
        writes = []
        for k in range(valid):
            value = r["acc"][k] + int(bias[g["bias"]][k])
            act = int(requantize(np.array([value]), layer["shift"], cfg.act_bits)[0])
            addr, lane = where(cfg, layout, area, g["chan"] + k, r["pos"])
            writes.append((addr % act_words(cfg), lane,
                           (g["chan"] + k) % (1 << ceil_log2(cfg.out_depth)), act, value))
        out.append(writes)
    return out


def run(seed: int):
    rng, cfg, bias, layer, results, layout, area = random_case(seed)
    harness = Harness(cfg, bias)
    dut = harness.dut
    offered, captured, writes = [], [], []

    async def bench(ctx):
        for name, value in layer.items():
            ctx.set(getattr(dut.layer, name), value)
        cycle = 0
        pending = list(results)
        offering = False
        total = sum(map(len, expected(cfg, bias, layer, results, layout, area)))
        while pending or len(writes) < total:
            if pending and not offering and rng.random() < 0.6:
                offering = True
                offered.append(cycle)
                ctx.set(dut.result.payload, {"acc": pending[0]["acc"],
                                             "group": pending[0]["group"]})
            ctx.set(dut.result.valid, offering)
            _, _, ready, wvalid, wpay = await ctx.tick().sample(
                dut.result.ready, dut.write.valid, dut.write.payload)
            if offering and ready:
                captured.append(cycle)
                pending.pop(0)
                offering = False
            if wvalid:
                writes.append((cycle, (wpay.addr, wpay.lane, wpay.chan, wpay.act, wpay.value)))
            cycle += 1
            assert cycle < 1000, "the unit stopped"

    sim = Simulator(harness)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    return cfg, bias, layer, results, layout, area, offered, captured, writes


@pytest.mark.parametrize("seed", range(12))
def test_writes_and_timing_match_the_models(seed):
    cfg, bias, layer, results, layout, area, offered, captured, writes = run(seed)
    want = expected(cfg, bias, layer, results, layout, area)
    assert [w for _, w in writes] == [w for group in want for w in group], f"seed {seed}"
    # Capture j waits for its offer and for the last lane of result j - 1 to be selected.
    prev = None
    for j, c in enumerate(captured):
        assert c == max(offered[j], prev + len(want[j - 1]) if prev is not None else 0), (
            f"seed {seed}, result {j}")
        prev = c
    when = [c + WRITE_LATENCY + k for c, group in zip(captured, want, strict=True)
            for k in range(len(group))]
    assert [cycle for cycle, _ in writes] == when, f"seed {seed}"
