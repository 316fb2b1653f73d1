# amaranth: UnusedElaboratable=no
"""The accelerator's ``readback`` port (``hw/accelerator.py``) in Amaranth's simulator.

Rows written with ``load`` come back equal through ``readback``, in any order, with
idle gaps on the request stream and back-pressure on the response stream; an
inference between readbacks still gives the golden outputs in exactly the cycles the
cycle model predicts; no request is taken while an inference runs. The last test
puts the real accelerator behind the byte-stream link (``LinkCore``) and reads back
rows written with WRITE frames.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.sim import Simulator
from shiftpool.hw.accelerator import Accelerator, load_layout
from shiftpool.hw.link import LinkConfig, LinkCore, attach_accelerator
from shiftpool.hw.link.protocol import (
    REPLY,
    Command,
    parse_rows,
    read_payload,
    row_bytes,
    write_payload,
)
from shiftpool.hw.program import REGIONS
from shiftpool.hw.signature import readback_signature
from shiftpool.sw.compile.cycles import inference_cycles
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import compile_model, region_depths, region_widths
from shiftpool.sw.host.frames import Frame, FrameDecoder, encode_frame
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes import golden

CLOCK_PERIOD = 1e-6


def random_image(seed: int):
    """A random model, a configuration fitted to it and its compiled image."""
    rng = np.random.default_rng(seed)
    scheme = ("flightnn", "int8")[seed % 2]
    model = random_model(rng, scheme=scheme, act_bits=int(rng.integers(3, 9)),
                         exp_bits=int(rng.integers(1, 4)), k_mode="mixed",
                         input_shape=(2, 4, 5), convs=(3,), pool=bool(seed % 3 == 0),
                         dense=(int(rng.integers(2, 7)),))
    config = fit_config(model, lanes=int(rng.integers(1, 5)), taps=int(rng.integers(1, 9)))
    return rng, model, config


def random_rows(rng, config) -> dict:
    """Every row of every region: random bits of the region's width."""
    widths, depths = region_widths(config), region_depths(config)
    return {name: [int.from_bytes(rng.bytes(row_bytes(widths[name])), "little")
                   & ((1 << widths[name]) - 1) for _ in range(depths[name])]
            for name in REGIONS}


class PortDriver:
    """Drives ``load``, ``readback`` and ``inp``/``out`` of one accelerator with idle
    gaps and back-pressure; every wait is bounded."""

    LIMIT = 5000

    def __init__(self, dut: Accelerator, rng, gap: float = 0.3, stall: float = 0.3):
        self.dut, self.rng, self.gap, self.stall = dut, rng, gap, stall

    async def _offer(self, ctx, stream, fields: dict):
        while self.rng.random() < self.gap:
            await ctx.tick()
        for name, value in fields.items():
            ctx.set(getattr(stream.payload, name), value)
        ctx.set(stream.valid, 1)
        for _ in range(self.LIMIT):
            _, _, ready = await ctx.tick().sample(stream.ready)
            if ready:
                break
        else:
            raise AssertionError(f"ready stayed low for {self.LIMIT} cycles")
        ctx.set(stream.valid, 0)

    async def load(self, ctx, region: str, addr: int, row: int):
        await self._offer(ctx, self.dut.load, {"region": REGIONS.index(region), "addr": addr,
                                               "data": row})

    async def read(self, ctx, region: str, addr: int) -> int:
        """Row ``addr`` of ``region``, read a byte per request."""
        rb = self.dut.readback
        row = 0
        for byte in range(row_bytes(region_widths(self.dut.config)[region])):
            await self._offer(ctx, rb.req, {"region": REGIONS.index(region), "addr": addr,
                                            "byte": byte})
            for _ in range(self.LIMIT):
                ready = self.rng.random() >= self.stall
                ctx.set(rb.resp.ready, ready)
                _, _, valid, value = await ctx.tick().sample(rb.resp.valid, rb.resp.payload)
                if valid and ready:
                    ctx.set(rb.resp.ready, 0)
                    row |= value << (8 * byte)
                    break
            else:
                raise AssertionError(f"no readback response within {self.LIMIT} cycles")
        return row

    async def infer(self, ctx, words, classes: int) -> tuple[list[int], int]:
        dut = self.dut
        for i, word in enumerate(words):
            await self._offer(ctx, dut.inp, {"data": int(word), "last": i == len(words) - 1})
        outputs = []
        for _ in range(self.LIMIT * classes):
            ready = self.rng.random() >= self.stall
            ctx.set(dut.out.ready, ready)
            _, _, valid, word, last, cycles = await ctx.tick().sample(
                dut.out.valid, dut.out.payload.data, dut.out.payload.last, dut.cycles)
            if valid and ready:
                outputs.append(word)
                if last:
                    ctx.set(dut.out.ready, 0)
                    return outputs, cycles
        raise AssertionError(f"only {len(outputs)} of {classes} outputs")


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()


def test_port_is_the_handlers_signature():
    _, _, config = random_image(0)
    dut = Accelerator(config)
    assert dut.signature.members["readback"].signature == readback_signature(config).flip()
    assert len(dut.readback.resp.payload) == 8
    assert len(dut.readback.req.payload.byte) == (
        row_bytes(load_layout(config)["data"].shape.width) - 1).bit_length()


@pytest.mark.parametrize("seed", range(6))
def test_rows_read_back_equal(seed):
    """Random rows into every region, read back in random order, twice for some."""
    rng, _, config = random_image(seed)
    rows = random_rows(rng, config)
    dut = Accelerator(config)
    tester = PortDriver(dut, np.random.default_rng([seed, 1]))
    order = [(name, addr) for name in REGIONS for addr in range(len(rows[name]))]
    order = [order[i] for i in rng.permutation(len(order))]
    order += order[:5]
    got = []

    async def bench(ctx):
        for name in REGIONS:
            for addr, row in enumerate(rows[name]):
                await tester.load(ctx, name, addr, row)
        for name, addr in order:
            got.append(await tester.read(ctx, name, addr))

    run(dut, bench)
    for (name, addr), row in zip(order, got, strict=True):
        assert row == rows[name][addr], (f"seed {seed}: {name}[{addr}] read {row:#x}, "
                                         f"wrote {rows[name][addr]:#x}")


@pytest.mark.parametrize("seed", range(4))
def test_readback_around_inferences(seed):
    """Load a model's image, read it all back, run inputs with readbacks between them:
    the outputs are the golden model's and the cycles the cycle model's; no request
    is taken while busy."""
    rng, model, config = random_image(seed)
    image = compile_model(model, config)
    x = rng.integers(0, 1 << model.act_bits, size=(3,) + tuple(model.input_shape))
    expected = golden.run(model, x)
    dut = Accelerator(config)
    tester = PortDriver(dut, np.random.default_rng([seed, 2]))
    seen = {"rows": {}, "outputs": [], "cycles": [], "taken_busy": 0}

    async def bench(ctx):
        for name in REGIONS:
            for addr, row in enumerate(image.regions[name]):
                await tester.load(ctx, name, addr, row)
        for name in REGIONS:
            seen["rows"][name] = [await tester.read(ctx, name, addr)
                                  for addr in range(len(image.regions[name]))]
        for n, words in enumerate(image.input_stream(x)):
            # A request offered during the inference must wait until it is over.
            for i, word in enumerate(words):
                await tester._offer(ctx, dut.inp, {"data": int(word),
                                                   "last": i == len(words) - 1})
            rb = dut.readback
            ctx.set(rb.req.payload.region, REGIONS.index("weights"))
            ctx.set(rb.req.payload.addr, n % len(image.regions["weights"]))
            ctx.set(rb.req.payload.byte, n % row_bytes(region_widths(config)["weights"]))
            ctx.set(rb.req.valid, 1)
            outputs = []
            for _ in range(PortDriver.LIMIT * len(expected[n])):
                ctx.set(dut.out.ready, 1)
                _, _, busy, taken, valid, word, last, cycles = await ctx.tick().sample(
                    dut.busy, rb.req.ready, dut.out.valid, dut.out.payload.data,
                    dut.out.payload.last, dut.cycles)
                seen["taken_busy"] += int(busy and taken)
                if valid:
                    outputs.append(word)
                    if last:
                        break
            else:
                raise AssertionError(f"only {len(outputs)} outputs")
            ctx.set(dut.out.ready, 0)
            seen["outputs"].append(outputs)
            seen["cycles"].append(cycles)
            # The pending request is taken once idle; its row follows.
            while not ctx.get(rb.req.ready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(rb.req.valid, 0)
            ctx.set(rb.resp.ready, 1)
            # The byte follows within three cycles of the request being taken.
            for _ in range(3):
                _, _, valid, row = await ctx.tick().sample(rb.resp.valid, rb.resp.payload)
                if valid:
                    break
            ctx.set(rb.resp.ready, 0)
            byte = n % row_bytes(region_widths(config)["weights"])
            want = image.regions["weights"][n % len(image.regions["weights"])] >> (8 * byte)
            assert valid and row == want & 0xFF

    run(dut, bench)
    for name in REGIONS:
        assert seen["rows"][name] == image.regions[name], f"seed {seed}: region {name}"
    assert np.array_equal(np.asarray(seen["outputs"]), expected), f"seed {seed}"
    assert seen["cycles"] == [inference_cycles(image)] * len(x), f"seed {seed}"
    assert seen["taken_busy"] == 0


def test_input_waits_for_a_pending_response():
    """While a response waits to be taken, input words are refused (the program read
    port is held), and the inference that follows is still exact."""
    rng, model, config = random_image(5)
    image = compile_model(model, config)
    x = rng.integers(0, 1 << model.act_bits, size=(1,) + tuple(model.input_shape))
    dut = Accelerator(config)
    tester = PortDriver(dut, np.random.default_rng(9), gap=0.0, stall=0.0)
    seen = {}

    async def bench(ctx):
        for name in REGIONS:
            for addr, row in enumerate(image.regions[name]):
                await tester.load(ctx, name, addr, row)
        rb = dut.readback
        ctx.set(rb.req.payload.region, REGIONS.index("bias"))
        ctx.set(rb.req.payload.addr, 0)
        ctx.set(rb.req.payload.byte, 0)
        ctx.set(rb.req.valid, 1)
        await ctx.tick()
        ctx.set(rb.req.valid, 0)
        ctx.set(dut.inp.valid, 1)
        # The request was registered; its row is read in this cycle, its byte picked
        # in the next.
        for _ in range(2):
            _, _, inp_ready = await ctx.tick().sample(dut.inp.ready)
            assert not inp_ready
        for _ in range(5):
            _, _, inp_ready, resp_valid = await ctx.tick().sample(dut.inp.ready,
                                                                  rb.resp.valid)
            assert resp_valid and not inp_ready
        ctx.set(dut.inp.valid, 0)
        ctx.set(rb.resp.ready, 1)
        _, _, row = await ctx.tick().sample(rb.resp.payload)
        ctx.set(rb.resp.ready, 0)
        seen["row"] = row
        seen["out"], seen["cycles"] = await tester.infer(ctx, image.input_stream(x)[0],
                                                         image.output_words)

    run(dut, bench)
    assert seen["row"] == image.regions["bias"][0] & 0xFF
    assert seen["out"] == golden.run(model, x)[0].tolist()
    assert seen["cycles"] == inference_cycles(image)


class LinkBench(Elaboratable):
    """The byte-stream link in front of the real accelerator."""

    def __init__(self, config, link):
        self.link = LinkCore(config, link)
        self.acc = Accelerator(config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = self.link
        attach_accelerator(m, self.link, self.acc)
        return m


def test_write_and_read_frames_through_the_link():
    """WRITE frames of every region through ``LinkCore``, READ frames back: equal."""
    rng, _, config = random_image(1)
    rows = random_rows(rng, config)
    widths = region_widths(config)
    link = LinkConfig(divisor=4, max_payload=256, byte_timeout=1000, rx_fifo_depth=8)
    bench = LinkBench(config, link)
    core = bench.link
    decoder = FrameDecoder(link.max_payload)
    got = {}

    async def exchange(ctx, frame: bytes) -> Frame:
        for byte in frame:
            ctx.set(core.i.payload, byte)
            ctx.set(core.i.valid, 1)
            await ctx.tick().until(core.i.ready)
        ctx.set(core.i.valid, 0)
        ctx.set(core.o.ready, 1)
        for _ in range(20_000):
            _, _, valid, byte = await ctx.tick().sample(core.o.valid, core.o.payload)
            events = decoder.feed(int(byte)) if valid else []
            if events:
                assert isinstance(events[0], Frame), events
                return events[0]
        raise AssertionError("no reply")

    async def main(ctx):
        seq = 0
        for name in (n for n in REGIONS if rows[n]):
            per = (link.max_payload - 7) // row_bytes(widths[name])
            for start in range(0, len(rows[name]), per):
                seq += 1
                reply = await exchange(ctx, encode_frame(Command.WRITE, seq, write_payload(
                    name, start, rows[name][start:start + per], widths[name])))
                assert (reply.cmd, reply.seq) == (Command.WRITE | REPLY, seq), reply
        for name in REGIONS:
            got[name] = []
            if not rows[name]:
                continue
            per = link.max_payload // row_bytes(widths[name])
            for start in range(0, len(rows[name]), per):
                seq += 1
                count = min(per, len(rows[name]) - start)
                reply = await exchange(ctx, encode_frame(Command.READ, seq,
                                                         read_payload(name, start, count)))
                assert (reply.cmd, reply.seq) == (Command.READ | REPLY, seq), reply
                got[name] += parse_rows(reply.payload, widths[name])

    sim = Simulator(bench)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(main)
    sim.run()
    assert got == rows
