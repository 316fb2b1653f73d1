# amaranth: UnusedElaboratable=no
"""The UART (``shiftpool.hw.link.uart``) in Amaranth's simulator: transmitter into
receiver at several divisors with idle gaps and a stalling sink; the receiver alone
on a line driven bit by bit at a baud rate 2% off, with framing errors, glitches and
overruns."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.sim import Simulator
from shiftpool.hw.link.uart import UARTReceiver, UARTTransmitter


class Loopback(Elaboratable):
    """A transmitter whose line is a receiver's."""

    def __init__(self, divisor: int):
        self.tx = UARTTransmitter(divisor)
        self.rx = UARTReceiver(divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = self.tx
        m.submodules.rx = self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


def line_levels(chars, divisor: int, error: float, rng, *, max_idle: int, bad_stop=()):
    """The line, one level per clock cycle, for ``chars`` sent with a bit time of
    ``divisor * (1 + error)`` cycles and 0..max_idle idle cycles before each; the
    characters whose index is in ``bad_stop`` get a low stop bit."""
    bit = divisor * (1 + error)
    levels = [1] * (2 * divisor)
    for n, char in enumerate(chars):
        levels += [1] * int(rng.integers(0, max_idle + 1))
        bits = [0] + [(char >> i) & 1 for i in range(8)] + [0 if n in bad_stop else 1]
        for j, level in enumerate(bits):
            levels += [level] * (round((j + 1) * bit) - round(j * bit))
        if n in bad_stop:
            levels += [1] * divisor
    return levels + [1] * (3 * divisor)


def receive_line(divisor: int, levels, *, ready: float = 1.0, seed: int = 0):
    """Drive a receiver's line with ``levels``; returns the characters it delivered
    and the numbers of framing-error and overrun strobes."""
    dut = UARTReceiver(divisor)
    got, strobes = [], {"framing_error": 0, "overrun": 0}
    rng = np.random.default_rng(seed)

    async def line(ctx):
        for level in levels:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def sink(ctx):
        while True:
            take = int(rng.random() < ready)
            ctx.set(dut.o.ready, take)
            _, _, valid, payload, fe, ov = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.framing_error, dut.overrun)
            if take and valid:
                got.append(int(payload))
            strobes["framing_error"] += fe
            strobes["overrun"] += ov

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(sink, background=True)
    sim.add_testbench(line)
    sim.run()
    return got, strobes


@pytest.mark.parametrize("divisor", [4, 5, 7, 16])
def test_loopback_random_bytes(divisor):
    seed = divisor
    rng = np.random.default_rng(seed)
    chars = [int(c) for c in rng.integers(0, 256, size=48)]
    dut = Loopback(divisor)
    got, errors = [], []

    async def source(ctx):
        src_rng = np.random.default_rng(seed + 100)
        for char in chars:
            # Idle from none (back to back) to a few characters' time.
            if src_rng.random() < 0.5:
                ctx.set(dut.tx.i.valid, 0)
                await ctx.tick().repeat(int(src_rng.integers(1, 30 * divisor)))
            ctx.set(dut.tx.i.payload, char)
            ctx.set(dut.tx.i.valid, 1)
            await ctx.tick().until(dut.tx.i.ready)
        ctx.set(dut.tx.i.valid, 0)

    async def sink(ctx):
        sink_rng = np.random.default_rng(seed + 200)
        limit = 40 * divisor * 11 * len(chars)
        for _ in range(limit):
            if len(got) == len(chars):
                break
            take = int(sink_rng.random() < 0.5)
            ctx.set(dut.rx.o.ready, take)
            _, _, valid, payload, fe, ov = await ctx.tick().sample(
                dut.rx.o.valid, dut.rx.o.payload, dut.rx.framing_error, dut.rx.overrun)
            if take and valid:
                got.append(int(payload))
            if fe or ov:
                errors.append((len(got), "framing" if fe else "overrun"))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    assert errors == [], f"seed {seed}"
    assert got == chars, f"seed {seed}"


def test_transmitter_fills_the_line():
    """Back-to-back characters take exactly 10 bit times each."""
    divisor = 6
    dut = UARTTransmitter(divisor)
    chars = [0x00, 0xFF, 0x55, 0xA5]
    line = []

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        for char in chars:
            ctx.set(dut.i.payload, char)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def probe(ctx):
        while True:
            _, _, tx = await ctx.tick().sample(dut.tx)
            line.append(int(tx))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(probe, background=True)
    sim.add_testbench(bench)
    sim.run_until(1e-6 * (10 * divisor * len(chars) + 20))
    start = line.index(0)
    expected = []
    for char in chars:
        for level in [0] + [(char >> i) & 1 for i in range(8)] + [1]:
            expected += [level] * divisor
    assert line[start:start + len(expected)] == expected


@pytest.mark.parametrize("divisor", [8, 16])
@pytest.mark.parametrize("error", [-0.02, 0.02])
def test_receiver_tolerates_baud_error(divisor, error):
    seed = divisor + int(error * 100)
    rng = np.random.default_rng(seed)
    chars = [int(c) for c in rng.integers(0, 256, size=24)] + [0x00, 0xFF, 0x80, 0x01]
    levels = line_levels(chars, divisor, error, rng, max_idle=divisor)
    got, strobes = receive_line(divisor, levels)
    assert strobes == {"framing_error": 0, "overrun": 0}, f"seed {seed}"
    assert got == chars, f"seed {seed}"


def test_receiver_flags_framing_error_and_recovers():
    divisor = 8
    rng = np.random.default_rng(1)
    chars = [0x12, 0x34, 0x56, 0x00, 0x78]
    levels = line_levels(chars, divisor, 0.0, rng, max_idle=0, bad_stop={1, 3})
    got, strobes = receive_line(divisor, levels)
    assert got == [0x12, 0x56, 0x78]
    assert strobes == {"framing_error": 2, "overrun": 0}


def test_receiver_rejects_start_glitches():
    divisor = 8
    rng = np.random.default_rng(2)
    tail = line_levels([0x3C], divisor, 0.0, rng, max_idle=0)
    # Low pulses shorter than half a bit, each followed by a high bit time.
    levels = [1] * 16
    for width in (1, 2, divisor // 2 - 2):
        levels += [0] * width + [1] * divisor
    got, strobes = receive_line(divisor, levels + tail)
    assert got == [0x3C]
    assert strobes == {"framing_error": 0, "overrun": 0}


def test_receiver_reports_overrun():
    """A sink that never takes: the first character is kept, later ones dropped."""
    divisor = 5
    rng = np.random.default_rng(3)
    levels = line_levels([0x11, 0x22, 0x33], divisor, 0.0, rng, max_idle=0)
    got, strobes = receive_line(divisor, levels, ready=0.0)
    assert got == []
    assert strobes == {"framing_error": 0, "overrun": 2}


@pytest.mark.parametrize("bad", [0, 2, 3, 1.5, "4"])
def test_divisor_is_checked(bad):
    with pytest.raises((TypeError, ValueError), match="divisor"):
        UARTReceiver(bad)
    with pytest.raises((TypeError, ValueError), match="divisor"):
        UARTTransmitter(bad)
