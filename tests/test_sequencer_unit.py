"""The sequencer (``shiftpool.hw.controller.sequencer``) in Amaranth's simulator, on the
layer program the compiler made (``shiftpool.sw.compile.image``), two inferences in a
row.

The bench stands in for the other units: a program memory holding the image's
program rows (each descriptor's words), an output memory, and an issue pipeline and
drain that take, per layer, the cycles the cycle model gives it (the layer's last
beat or window issued at a random cycle, the last write at cycle ``layer_cycles -
fetch_cycles - 1``, cycle 0 being its DECODE). The sequencer must then fetch each
layer's descriptor and start the layer with it in the issue pipeline's mode for its
kind, add no cycle of its own beyond the fetch, and count exactly
``inference_cycles`` (the cycle model). Around it: load rows with idle gaps pass to
the memory bank while idle; input values with idle gaps fill buffer 0 word by word,
``in_lanes`` lanes a word (the host's layout, ``Image.input_stream``); no input is
taken while a readback request is in progress nor in the cycle after it; the outputs
leave in channel order with ``last`` on the final one under back-pressure."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Value, signed, unsigned
from amaranth.lib import memory
from amaranth.sim import Simulator
from shiftpool.hw.controller.sequencer import Sequencer
from shiftpool.hw.memory_map import load_data_width, region_depths
from shiftpool.hw.program import KIND_POOL, REGIONS, descriptor_fields, unpack
from shiftpool.sim.kit import seeds, stream_get, stream_put, watchdog
from shiftpool.sw.compile.cycles import fetch_cycles, inference_cycles, layer_cycles
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import compile_model
from shiftpool.sw.model.randmodel import random_model

CLOCK_PERIOD = 1e-6


class Harness(Elaboratable):
    """The sequencer with a program memory holding the rows ``program`` and an output
    memory holding ``outputs``."""

    def __init__(self, config, program, outputs):
        self.dut = Sequencer(config)
        self.program, self.outputs = program, outputs

    def elaborate(self, platform):
        cfg = self.dut.config
        m = Module()
        m.submodules.dut = dut = self.dut
        mems = {"program": (unsigned(len(Value.cast(dut.program_rd.data))),
                            region_depths(cfg)["program"], self.program, dut.program_rd),
                "out": (signed(cfg.acc_width), cfg.out_depth, self.outputs, dut.out_rd)}
        for name, (shape, depth, init, user) in mems.items():
            m.submodules[name] = mem = memory.Memory(shape=shape, depth=depth, init=init)
            port = mem.read_port()
            m.d.comb += [port.addr.eq(user.addr), port.en.eq(user.en), user.data.eq(port.data)]
        return m


@pytest.mark.parametrize("seed", seeds(4))
def test_program_walk_and_streams(seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng, scheme="flightnn", act_bits=6, input_shape=(2, 4, 4),
                         convs=(int(rng.integers(1, 5)),), pool=bool(seed % 2),
                         dense=(int(rng.integers(2, 6)),))
    cfg = fit_config(model, lanes=int(rng.integers(1, 4)), taps=int(rng.integers(1, 5)))
    image = compile_model(model, cfg)
    fields = descriptor_fields(cfg)
    program = image.descriptors
    descs = [unpack(fields, desc) for desc in program]
    classes = descs[-1]["channels"]
    outputs = [int(v) for v in rng.integers(-1000, 1000, size=cfg.out_depth)]
    xs = rng.integers(0, 1 << model.act_bits, size=(2,) + tuple(model.input_shape))
    inputs = image.input_stream(xs)
    lanes = descs[0]["in_lanes"]
    loads = [{"region": int(rng.integers(0, len(REGIONS))), "addr": int(rng.integers(0, 8)),
              "data": int(rng.integers(0, 1 << load_data_width(cfg)))} for _ in range(10)]
    # from each layer's DECODE
    lengths = [n - fetch_cycles(cfg) for n in layer_cycles(image)]
    print(f"seed {seed}: lanes {cfg.lanes}, taps {cfg.taps}, layers "
          f"{[layer.kind for layer in model.layers]}, cycles {lengths}")
    harness = Harness(cfg, image.regions["program"], outputs)
    dut = harness.dut
    got = {"fills": [], "rows": [], "outs": [], "cycles": [], "starts": [], "taken": []}

    async def host(ctx):
        await stream_put(ctx, dut.load, loads, rng, idle=0.3)
        for n in range(len(xs)):
            await stream_put(ctx, dut.inp, [{"data": int(v), "last": k == len(inputs[n]) - 1}
                                            for k, v in enumerate(inputs[n])], rng, idle=0.3)
            got["outs"].append(await stream_get(ctx, dut.out, classes, rng, 0.4))
            await ctx.tick()
            assert not ctx.get(dut.busy)
            got["cycles"].append(ctx.get(dut.cycles))

    async def units(ctx):
        """The issue pipeline, the drain and a readback request now and then."""
        cycle, layer, start_cycle, end, last_write = 0, None, None, None, None
        busy_until = -1
        while True:
            readback = cycle < busy_until
            # no input in a readback cycle, nor in the cycle after (row 0 re-read)
            blocked = readback or cycle == busy_until
            if not readback and rng.random() < 0.02:
                busy_until = cycle + int(rng.integers(2, 7))     # busy from the next cycle
            ctx.set(dut.readback_status.busy, readback)
            ctx.set(dut.issue.end, cycle == end)
            ctx.set(dut.drained, last_write is not None and cycle >= last_write)
            _, _, start, nxt, mac, pool, fill_valid, fill, rows_valid, rows, inp_taken = \
                await ctx.tick().sample(dut.issue.start, Value.cast(dut.issue.next),
                                        dut.issue.mac, dut.issue.pool, dut.fill.valid,
                                        dut.fill.payload, dut.rows.valid, dut.rows.payload,
                                        dut.inp.valid & dut.inp.ready)
            if inp_taken:
                got["taken"].append((cycle, blocked))
            if fill_valid:
                got["fills"].append((fill.addr, fill.lane, fill.act))
            if rows_valid:
                got["rows"].append({"region": rows.region, "addr": rows.addr, "data": rows.data})
            if layer is not None:
                running = start_cycle < cycle <= end
                kind = descs[layer]["kind"]
                assert (mac, pool) == (running and kind != KIND_POOL,
                                       running and kind == KIND_POOL), (layer, cycle)
            if start:
                layer = len(got["starts"]) % len(program)
                got["starts"].append((cycle, nxt))
                start_cycle = cycle
                end = cycle + int(rng.integers(1, lengths[layer] - 1))
                last_write = cycle + lengths[layer] - 1
            cycle += 1

    sim = Simulator(harness)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(host)
    sim.add_testbench(units, background=True)
    sim.add_testbench(watchdog(100000), background=True)
    sim.run()

    assert got["rows"] == loads
    assert got["fills"] == [(k // lanes, k % lanes, int(v)) for row in inputs
                            for k, v in enumerate(row)]
    assert not [cycle for cycle, blocked in got["taken"] if blocked]
    assert [row for _, row in got["starts"]] == program * len(xs)
    assert got["cycles"] == [inference_cycles(image)] * len(xs)
    assert [[(word.data, word.last) for word in outs] for outs in got["outs"]] == [
        [(outputs[c], int(c == classes - 1)) for c in range(classes)]] * len(xs)
