"""The memory bank (``shiftpool.hw.controller.memory_bank``) in Amaranth's simulator:
rows of every load region loaded with idle gaps come back unchanged through readback
(requests with idle gaps, responses with back-pressure, each offered two cycles after
its request was taken) and through each region's read port; the activation buffers
take the input loader's lanes (buffer 0 while loading), the write-back unit's lanes
and the max-pool's words or lanes (the buffer the layer does not read), the final
layer's results go to the output memory; the read ports show the buffer the layer
reads, at the max-pool's address in a max-pool layer. Everything is checked against a
plain model of the memories (``docs/model-format.md``: a word's lane ``j`` is bits
``j*act_bits ..``)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.controller.memory_bank import MemoryBank, reader_regions
from shiftpool.hw.memory_map import region_depths, region_widths
from shiftpool.hw.program import REGIONS, act_words
from shiftpool.sim.kit import seeds, stream_put, watchdog

CLOCK_PERIOD = 1e-6
#: Cycles from a readback request's acceptance to its response being offered.
READBACK_LATENCY = 3
ENGINES = {
    "shiftadd": dict(lanes=2, taps=3, weight_depth=24, tap_depth=12, bias_depth=5,
                     program_depth=4, act_depth=30, out_depth=6),
    "pool": dict(lanes=2, taps=8, weight_depth=20, tap_depth=6, bias_depth=4,
                 index_depth=18, pool_size=16, program_depth=3, act_depth=64, out_depth=5),
    "insitu": dict(lanes=2, taps=2, weight_depth=10, tap_depth=8, bias_depth=4,
                   program_depth=3, act_depth=20, out_depth=4),
}


def case(engine: str, seed: int):
    rng = np.random.default_rng([seed, list(ENGINES).index(engine)])
    cfg = AcceleratorConfig(engine=engine, **ENGINES[engine])
    depths, widths = region_depths(cfg), region_widths(cfg)
    contents = {name: [int(v) for v in rng.integers(0, 1 << min(widths[name], 62),
                                                      size=depths[name])]
                for name in REGIONS if depths[name]}
    return rng, cfg, contents


def lane_bits(cfg, word: list[int]) -> int:
    return sum(int(v) << (j * cfg.act_bits) for j, v in enumerate(word))


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("seed", seeds(2))
def test_loaded_rows_come_back(engine, seed):
    rng, cfg, contents = case(engine, seed)
    widths = region_widths(cfg)
    loads = [{"region": REGIONS.index(name), "addr": addr, "data": row}
             for name, rows in contents.items() for addr, row in enumerate(rows)]
    loads = [loads[k] for k in rng.permutation(len(loads))]
    requests = [(REGIONS.index(name), int(rng.integers(0, len(contents[name]))),
                 int(rng.integers(0, -(-widths[name] // 8))))
                for name in rng.choice(list(contents), size=30)]
    dut = MemoryBank(cfg)
    accepts, offered, answered, ports = [], [], [], {}

    async def bench(ctx):
        await stream_put(ctx, dut.load, loads, rng, idle=0.3)
        ctx.set(dut.readback_enable, 1)
        await stream_put(ctx, dut.readback.req,
                         [{"region": r, "addr": a, "byte": b} for r, a, b in requests],
                         rng, idle=0.3)
        while len(answered) < len(requests):
            await ctx.tick()
        ctx.set(dut.readback_enable, 0)
        # Each reader's own port: the rows it reads, a cycle after their address.
        for name in reader_regions(cfg):
            if name not in contents:
                continue
            port = getattr(dut, f"{name}_rd")
            for addr in rng.permutation(len(contents[name]))[:6]:
                ctx.set(port.addr, int(addr))
                await ctx.tick()
                ports.setdefault(name, []).append(
                    (int(addr), ctx.get(Value.cast(port.data))))

    async def sink(ctx):
        req, resp = dut.readback.req, dut.readback.resp
        cycle = 0
        while len(answered) < len(requests):
            ready = int(rng.random() < 0.6)
            ctx.set(resp.ready, ready)
            _, _, valid, byte, req_valid, req_ready = await ctx.tick().sample(
                resp.valid, resp.payload, req.valid, req.ready)
            if req_valid and req_ready:
                accepts.append(cycle)
            if valid and len(offered) == len(answered):
                offered.append(cycle)
            if valid and ready:
                answered.append(byte)
            cycle += 1
        ctx.set(resp.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.add_testbench(sink)
    sim.add_testbench(watchdog(20000), background=True)
    sim.run()
    assert answered == [contents[REGIONS[code]][addr] >> (8 * byte) & 0xFF
                        for code, addr, byte in requests], f"seed {seed}"
    assert offered == [c + READBACK_LATENCY for c in accepts]
    assert ports and all(got == contents[name][addr]
                         for name, reads in ports.items() for addr, got in reads)


@pytest.mark.parametrize("engine", ["shiftadd", "pool"])
@pytest.mark.parametrize("seed", seeds(2))
def test_activation_and_output_writes(engine, seed):
    rng, cfg, _ = case(engine, seed)
    words, taps, top = act_words(cfg), cfg.taps, 1 << cfg.act_bits
    buffers = np.zeros((2, words, taps), dtype=np.int64)
    out = {}
    src = int(rng.integers(0, 2))
    fills = [{"addr": int(rng.integers(0, words)), "lane": int(rng.integers(0, taps)),
              "act": int(rng.integers(0, top))} for _ in range(25)]
    # The write-back unit's writes: a word's lanes under their enables (one lane, or
    # several with the word path), or in the final layer one output channel.
    results = [{"addr": int(rng.integers(0, words)),
                "data": [int(v) for v in rng.integers(0, top, size=taps)],
                "en": int(rng.integers(0, 1 << taps)),
                "chan": int(rng.integers(0, cfg.out_depth)),
                "value": int(rng.integers(-999, 999))} for _ in range(25)]
    pooled = [{"addr": int(rng.integers(0, words)),
               "data": [int(v) for v in rng.integers(0, top, size=taps)],
               "en": int(rng.integers(0, 1 << taps))} for _ in range(25)]
    finals = results[:8]
    for w in fills:
        buffers[0, w["addr"], w["lane"]] = w["act"]
    for w in results + pooled:
        for j in range(taps):
            if w["en"] >> j & 1:
                buffers[1 - src, w["addr"], j] = w["data"][j]
    for w in finals:
        out[w["chan"]] = w["value"]
    dut = MemoryBank(cfg)
    got = {}

    async def bench(ctx):
        mode = dut.mode
        ctx.set(mode.src, src)
        ctx.set(mode.loading, 1)
        await stream_put(ctx, dut.fill, fills, rng, idle=0.3)
        ctx.set(mode.loading, 0)
        await stream_put(ctx, dut.results, results, rng, idle=0.3)
        ctx.set(mode.pool, 1)
        await stream_put(ctx, dut.pooled, pooled, rng, idle=0.3)
        ctx.set(mode.pool, 0)
        ctx.set(mode.last, 1)
        await stream_put(ctx, dut.results, finals, rng, idle=0.3)
        # Read both buffers back through the one read port: the issue pipeline's
        # address, and the max-pool's in a max-pool layer.
        for b in range(2):
            ctx.set(mode.src, b)
            for addr in range(words):
                pool = int(rng.integers(0, 2))
                ctx.set(mode.pool, pool)
                ctx.set(dut.window_addr if pool else dut.act_rd.addr, addr)
                ctx.set(dut.act_rd.addr if pool else dut.window_addr,
                        int(rng.integers(0, words)))
                await ctx.tick()
                got[b, addr] = ctx.get(Value.cast(dut.act_rd.data))
        for chan in range(cfg.out_depth):
            ctx.set(dut.out_rd.addr, chan)
            await ctx.tick()
            got["out", chan] = ctx.get(dut.out_rd.data)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.add_testbench(watchdog(5000), background=True)
    sim.run()
    for b in range(2):
        assert [got[b, a] for a in range(words)] == [
            lane_bits(cfg, buffers[b, a]) for a in range(words)], f"buffer {b}"
    assert {chan: got["out", chan] for chan in out} == out


@pytest.mark.parametrize("seed", seeds(2))
def test_insitu_row_buffer(seed):
    """The MLG row buffer: rows the generate phase writes, read by the issue pipeline
    through ``weights_rd``."""
    rng, cfg, _ = case("insitu", seed)
    width = cfg.lanes * cfg.taps * cfg.code_width
    rows = [int(v) for v in rng.integers(0, 1 << min(width, 62), size=cfg.weight_depth)]
    dut = MemoryBank(cfg)
    got = []

    async def bench(ctx):
        for addr, row in enumerate(rows):
            while rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.rows_write, {"valid": 1, "addr": addr, "data": row})
            await ctx.tick()
            ctx.set(dut.rows_write.valid, 0)
        for addr in rng.permutation(len(rows)):
            ctx.set(dut.weights_rd.addr, int(addr))
            await ctx.tick()
            got.append((int(addr), ctx.get(dut.weights_rd.data)))

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    assert [row for _, row in got] == [rows[addr] for addr, _ in got]
