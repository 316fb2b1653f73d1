"""The write-back unit (``shiftpool.hw.controller.writeback``) in Amaranth's simulator:
results offered with random idle gaps, against the golden requantizer
(``shiftpool.sw.schemes.golden.requantize``) and the write-back part of the cycle model (result
``j`` captured at ``max(offered, c_{j-1} + W_{j-1})``, its write ``i`` at ``c_j + 3 +
i``; ``W`` is the group's valid lanes, or with ``writeback = "word"`` in a hidden layer
whose next channel is the next lane the words they go to); channel ``c`` at position
``p`` of a grouped map goes to word ``(c // taps) * area + p``, lane ``c % taps``, of a
flat one to activation ``c * area + p`` (word and lane ``divmod(c*area + p, taps)``)."""

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
                            out_depth=12, bias_depth=6, max_fan_in=16,
                            writeback=str(rng.choice(["lane", "word"])))
    shift = int(rng.integers(0, cfg.max_shift + 1))
    # Values around the activation range after the shift (some clip, most do not),
    # within the accumulator's.
    lim = 1 << min(cfg.sum_log2 - 1, cfg.act_bits + shift)
    bias = rng.integers(-lim // 4, lim, size=(cfg.bias_depth, lanes))
    layout, area = str(rng.choice(["grouped", "flat"])), int(rng.integers(1, 9))
    fields = _out_fields(cfg, layout, area, 0)
    layer = {"last": int(rng.random() < 0.2), "shift": shift, "n1": int(rng.integers(1, 12)),
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


def by_words(cfg, layer, layout, area) -> bool:
    """The unit writes a word's lanes at once: the word path, a hidden layer, and one
    channel further is one lane further."""
    return (cfg.writeback == "word" and not layer["last"] and cfg.taps > 1
            and (layout == "grouped" or area == 1))


def expected(cfg, bias, layer, results, layout, area):
    """Per result: its writes, each a list of lane writes (addr, lane, act) and, for a
    write of one lane, its (chan, value)."""
    out = []
    for r in results:
        g = r["group"]
        limit = layer["channels"] if g["two"] else layer["n1"]
        valid = min(cfg.lanes, max(1, limit - g["chan"]))
        lanes = []
        for k in range(valid):
            value = r["acc"][k] + int(bias[g["bias"]][k])
            act = int(requantize(np.array([value]), layer["shift"], cfg.act_bits)[0])
            addr, lane = where(cfg, layout, area, g["chan"] + k, r["pos"])
            lanes.append(((addr % act_words(cfg), lane, act),
                          ((g["chan"] + k) % (1 << ceil_log2(cfg.out_depth)), value)))
        if by_words(cfg, layer, layout, area):
            writes = {}
            for lane, _ in lanes:
                writes.setdefault(lane[0], []).append(lane)
            out.append([(ws, None) for ws in writes.values()])
        else:
            out.append([([lane], one) for lane, one in lanes])
    return out


def lane_writes(cfg, wpay):
    """The lane writes (addr, lane, act) of one write of the unit."""
    return [(wpay.addr, j, wpay.data[j]) for j in range(cfg.taps) if wpay.en >> j & 1]


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
                writes.append((cycle, (lane_writes(cfg, wpay), (wpay.chan, wpay.value))))
            cycle += 1
            assert cycle < 1000, "the unit stopped"

    sim = Simulator(harness)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    return cfg, bias, layer, results, layout, area, offered, captured, writes


@pytest.mark.parametrize("seed", range(24))
def test_writes_and_timing_match_the_models(seed):
    cfg, bias, layer, results, layout, area, offered, captured, writes = run(seed)
    want = expected(cfg, bias, layer, results, layout, area)
    flat_want = [w for group in want for w in group]
    assert len(writes) == len(flat_want), f"seed {seed}"
    for (_, (got, one)), (lanes, want_one) in zip(writes, flat_want, strict=True):
        assert got == lanes, f"seed {seed}"
        if want_one is not None:
            assert one == want_one, f"seed {seed}"
    # Capture j waits for its offer and for the last lane of result j - 1 to be selected.
    prev = None
    for j, c in enumerate(captured):
        assert c == max(offered[j], prev + len(want[j - 1]) if prev is not None else 0), (
            f"seed {seed}, result {j}")
        prev = c
    when = [c + WRITE_LATENCY + k for c, group in zip(captured, want, strict=True)
            for k in range(len(group))]
    assert [cycle for cycle, _ in writes] == when, f"seed {seed}"
