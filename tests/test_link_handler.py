# amaranth: UnusedElaboratable=no
"""The command handler (``shiftpool.hw.link``) in Amaranth's simulator, behind the
frame decoder and encoder, against a small behavioural stand-in for the accelerator
(``tests/test_readback.py`` puts the real one behind the link). Requests are built
and replies parsed with the host-side functions of ``shiftpool.hw.link.protocol`` and
``shiftpool.sw.host.frames``; the last test runs the same requests through the UART."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.link import LinkConfig, LinkCore, UARTLink, attach_accelerator
from shiftpool.hw.link.handler import CommandHandler
from shiftpool.hw.link.protocol import (
    REPLY,
    SYNC,
    Command,
    Reason,
    identify_payload,
    nak_payload,
    parse_identify,
    parse_nak,
    parse_rows,
    parse_run_reply,
    parse_status,
    read_payload,
    region_code,
    row_bytes,
    run_payload,
    write_payload,
)
from shiftpool.hw.program import REGIONS
from shiftpool.hw.signature import AcceleratorSignature
from shiftpool.sw.compile.image import region_depths, region_widths
from shiftpool.sw.host.frames import Frame, FrameDecoder, FrameError, encode_frame

CONFIG = AcceleratorConfig(lanes=2, taps=2, act_bits=8, exp_bits=3, max_fan_in=16,
                           act_depth=64, weight_depth=8, tap_depth=8, bias_depth=4,
                           program_depth=4, out_depth=4, max_dim=8, cycle_bits=16)
LINK = LinkConfig(divisor=4, max_payload=64, byte_timeout=80, run_timeout=300,
                  rx_fifo_depth=8)
#: Cycles the stand-in takes for an inference beyond one per input word.
LATENCY = 5


class StandIn(wiring.Component):
    """A behavioural accelerator with the ports the link drives.

    It keeps the four load regions in memories (written by ``load``, read by
    ``readback``). An inference sums its input words; ``cycles`` is the number of
    words plus ``LATENCY``, and output ``j`` (of ``outputs``) is the sum plus the
    weight row ``j`` (unsigned), wrapped to a signed ``acc_width`` number. Test knobs: ``stuck``
    (an inference never ends), ``hold_busy`` (busy without running), ``extra`` (one
    output more than ``out_depth``), ``deaf`` (idle, but takes no row and no readback
    request).
    """

    def __init__(self, config: AcceleratorConfig, outputs: int):
        self.config = config
        self.outputs = outputs
        super().__init__(AcceleratorSignature(config))
        # Test knobs, set by the testbench (not ports: the link connects to the
        # accelerator's signature).
        self.stuck, self.hold_busy, self.extra, self.deaf = (
            Signal(name=name) for name in ("stuck", "hold_busy", "extra", "deaf"))

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        widths, depths = region_widths(cfg), region_depths(cfg)
        idle = Signal()
        ports = []
        for code, name in enumerate(REGIONS):
            mem = memory.Memory(shape=unsigned(widths[name]), depth=depths[name], init=[])
            m.submodules[name] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(self.load.payload.addr), wp.data.eq(self.load.payload.data),
                         wp.en.eq(self.load.valid & self.load.ready
                                  & (self.load.payload.region == code))]
            ports.append(rp)
        m.d.comb += self.load.ready.eq(idle & ~self.hold_busy & ~self.deaf)

        # Readback: one request (one byte of a row) at a time, answered from the next
        # cycle.
        req, resp = self.readback.req, self.readback.resp
        pending = Signal()
        which = Signal.like(req.payload.region)
        byte = Signal.like(req.payload.byte)
        m.d.comb += req.ready.eq(idle & ~pending & ~self.deaf)
        for rp in ports:
            m.d.comb += [rp.addr.eq(req.payload.addr), rp.en.eq(req.valid & req.ready)]
        with m.If(req.valid & req.ready):
            m.d.sync += [pending.eq(1), which.eq(req.payload.region), byte.eq(req.payload.byte)]
        with m.If(resp.valid & resp.ready):
            m.d.sync += pending.eq(0)
        m.d.comb += resp.valid.eq(pending)
        with m.Switch(which):
            for code, rp in enumerate(ports):
                with m.Case(code):
                    m.d.comb += resp.payload.eq((rp.data >> (byte * 8))[:8])

        total = Signal(signed(cfg.acc_width))
        words = Signal(range(cfg.act_depth + 1))
        timer = Signal(range(cfg.act_depth + LATENCY + 1))
        j = Signal(range(cfg.out_depth + 2))
        n = Mux(self.extra, cfg.out_depth + 1, self.outputs)
        weights = ports[REGIONS.index("weights")]
        m.d.comb += self.busy.eq(~idle | self.hold_busy)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [idle.eq(1), self.inp.ready.eq(~self.hold_busy)]
                with m.If(self.inp.valid & ~self.hold_busy):
                    m.d.sync += [total.eq(total + self.inp.payload.data), words.eq(words + 1)]
                    with m.If(self.inp.payload.last):
                        m.d.sync += [timer.eq(words + 1 + LATENCY), j.eq(0),
                                     self.cycles.eq(words + 1 + LATENCY)]
                        m.next = "RUN"
            with m.State("RUN"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(~self.stuck):
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += [weights.addr.eq(j), weights.en.eq(1)]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.out.valid.eq(1),
                             self.out.payload.data.eq(
                                 total + weights.data),
                             self.out.payload.last.eq(j + 1 == n)]
                with m.If(self.out.ready):
                    m.d.sync += j.eq(j + 1)
                    m.next = "READ"
                    with m.If(j + 1 == n):
                        m.d.sync += [total.eq(0), words.eq(0)]
                        m.next = "IDLE"
        return m


def standin_outputs(config, inputs, weight_rows, outputs):
    """What :class:`StandIn` answers to ``inputs``: (cycles, outputs)."""
    w = config.acc_width

    def wrap(v):
        v &= (1 << w) - 1
        return v - (1 << w) if v >> (w - 1) else v

    s = sum(inputs)
    return len(inputs) + LATENCY, [wrap(s + weight_rows[j]) for j in range(outputs)]


class Bench(Elaboratable):
    """The link (byte-stream core or UART) with a stand-in attached."""

    def __init__(self, config, link, outputs: int, uart: bool = False):
        self.link = UARTLink(config, link) if uart else LinkCore(config, link)
        self.acc = StandIn(config, outputs)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = self.link
        attach_accelerator(m, self.link, self.acc)
        return m


class Host:
    """Drives a :class:`Bench` frame by frame from a testbench: sends bytes with idle
    gaps, collects reply bytes with back-pressure, parses them with the reference
    decoder. ``knobs`` are the stand-in's test inputs to set before a request."""

    def __init__(self, bench: Bench, seed: int):
        self.bench = bench
        self.rng = np.random.default_rng(seed)
        self.replies = FrameDecoder(LINK.max_payload)
        self.events = []
        self.resets = 0

    async def collect(self, ctx):
        """Background: takes reply bytes (byte stream) and counts accelerator resets."""
        core = self.bench.link
        while True:
            ready = int(self.rng.random() < 0.7)
            ctx.set(core.o.ready, ready)
            _, _, valid, byte, reset = await ctx.tick().sample(
                core.o.valid, core.o.payload, core.accel_reset)
            if ready and valid:
                self.events += self.replies.feed(int(byte))
            self.resets += reset

    async def send_bytes(self, ctx, data: bytes, first_gap: int = 0):
        core = self.bench.link
        for i, byte in enumerate(data):
            gap = first_gap if i == 0 else int(self.rng.random() < 0.2)
            if gap:
                ctx.set(core.i.valid, 0)
                await ctx.tick().repeat(gap)
            ctx.set(core.i.payload, byte)
            ctx.set(core.i.valid, 1)
            await ctx.tick().until(core.i.ready)
        ctx.set(core.i.valid, 0)

    async def reply(self, ctx, limit: int = 20_000):
        for _ in range(limit):
            if self.events:
                return self.events.pop(0)
            await ctx.tick()
        raise AssertionError("no reply")

    async def request(self, ctx, cmd: int, seq: int, payload: bytes = b""):
        await self.send_bytes(ctx, encode_frame(cmd, seq, payload))
        return await self.reply(ctx)


def simulate(bench: Bench, scenario, seed: int, host_cls=Host):
    host = host_cls(bench, seed)

    async def main(ctx):
        await scenario(ctx, host)
        await ctx.tick().repeat(10)
        assert host.events == [], f"unexpected replies {host.events}"

    sim = Simulator(bench)
    sim.add_clock(1e-6)
    sim.add_testbench(host.collect, background=True)
    sim.add_testbench(main)
    sim.run()
    return host


def ack(reply, cmd, seq):
    assert isinstance(reply, Frame), reply
    assert (reply.cmd, reply.seq) == (cmd | REPLY, seq), reply
    return reply.payload


def nak(reply, seq, reason, cmd):
    assert isinstance(reply, Frame), reply
    assert (reply.cmd, reply.seq, reply.payload) == (Command.NAK, seq, nak_payload(reason, cmd)), \
        f"expected NAK {reason.name}, got {reply}"


WIDTHS = region_widths(CONFIG)
DEPTHS = region_depths(CONFIG)
#: The regions this engine has (the pool engine's two are absent, depth 0).
PRESENT = [name for name in REGIONS if DEPTHS[name]]


def random_rows(rng, region: str) -> list[int]:
    """A full image of ``region``: random rows of all its bits."""
    width = WIDTHS[region]
    return [int.from_bytes(rng.bytes(row_bytes(width)), "little") & ((1 << width) - 1)
            for _ in range(DEPTHS[region])]


@pytest.mark.parametrize("seed", range(3))
def test_round_trip(seed):
    """IDENTIFY; WRITE random rows into every region in several frames; READ them
    back; RUN random inputs; STATUS counts the frames."""
    rng = np.random.default_rng(seed)
    outputs = 3
    images = {name: random_rows(rng, name) for name in PRESENT}
    runs = [[int(x) for x in rng.integers(0, 256, size=int(rng.integers(1, 40)))]
            for _ in range(3)]
    seen = {}

    async def scenario(ctx, host):
        seq = 0

        async def request(cmd, payload=b""):
            nonlocal seq
            seq = (seq + 1) % 256
            return seq, await host.request(ctx, cmd, seq, payload)

        s, r = await request(Command.IDENTIFY)
        seen["identity"] = ack(r, Command.IDENTIFY, s)
        frames = 1
        for name in PRESENT:
            rows, width = images[name], WIDTHS[name]
            per_frame = (LINK.max_payload - 7) // row_bytes(width)
            for start in range(0, len(rows), per_frame):
                chunk = rows[start:start + per_frame]
                s, r = await request(Command.WRITE, write_payload(name, start, chunk, width))
                assert ack(r, Command.WRITE, s) == b""
                frames += 1
        for name in PRESENT:
            start = int(rng.integers(0, DEPTHS[name]))
            count = DEPTHS[name] - start
            s, r = await request(Command.READ, read_payload(name, start, count))
            seen[name] = (start, parse_rows(ack(r, Command.READ, s), WIDTHS[name]))
            frames += 1
        seen["runs"] = []
        for inputs in runs:
            s, r = await request(Command.RUN, run_payload(inputs, CONFIG.act_bits))
            seen["runs"].append(parse_run_reply(ack(r, Command.RUN, s), CONFIG.cycle_bits,
                                                CONFIG.acc_width))
            frames += 1
        s, r = await request(Command.STATUS)
        seen["status"] = parse_status(ack(r, Command.STATUS, s), CONFIG.cycle_bits)
        seen["frames"] = frames + 1

    simulate(Bench(CONFIG, LINK, outputs), scenario, seed)
    assert seen["identity"] == identify_payload(CONFIG, LINK)
    identity = parse_identify(seen["identity"])
    assert identity.config_hash == CONFIG.hash
    assert identity.regions == {n: (DEPTHS[n], WIDTHS[n]) for n in PRESENT}
    for name in PRESENT:
        start, rows = seen[name]
        assert rows == images[name][start:], f"seed {seed}: region {name}"
    for inputs, got in zip(runs, seen["runs"], strict=True):
        assert got == standin_outputs(CONFIG, inputs, images["weights"], outputs), \
            f"seed {seed}"
    status = seen["status"]
    assert not status.busy
    assert status.last_cycles == len(runs[-1]) + LATENCY
    assert status.counters["frames"] == seen["frames"]
    assert sum(v for k, v in status.counters.items() if k != "frames") == 0


def test_nak_reasons():
    """Every refusal names its reason, writes nothing, and the next frame works."""
    w = WIDTHS["bias"]
    row = [0x123]
    nak_cases = [
        # (frame bytes, seq, reason, command byte in the NAK)
        (encode_frame(0x42, 1), 1, Reason.UNKNOWN_COMMAND, 0x42),
        (encode_frame(Command.IDENTIFY | REPLY, 2), 2, Reason.UNKNOWN_COMMAND, 0x81),
        (encode_frame(Command.IDENTIFY, 3, b"x"), 3, Reason.BAD_LENGTH, Command.IDENTIFY),
        (encode_frame(Command.WRITE, 4, write_payload("bias", 0, row, w)[:-1]), 4,
         Reason.BAD_LENGTH, Command.WRITE),
        (encode_frame(Command.WRITE, 5, b"\x03\x00"), 5, Reason.BAD_LENGTH, Command.WRITE),
        (encode_frame(Command.READ, 6, read_payload("bias", 0, 1) + b"\x00"), 6,
         Reason.BAD_LENGTH, Command.READ),
        # The reply would exceed max_payload (checked before the region's depth).
        (encode_frame(Command.READ, 7, read_payload(
            "program", 0, LINK.max_payload // row_bytes(WIDTHS["program"]) + 1)), 7,
         Reason.BAD_LENGTH, Command.READ),
        (encode_frame(Command.RUN, 8, b""), 8, Reason.BAD_LENGTH, Command.RUN),
        (encode_frame(Command.RUN, 9, bytes(65)), None, Reason.BAD_LENGTH, Command.RUN),
        (encode_frame(Command.WRITE, 10, write_payload(len(REGIONS), 0, row, w)), 10,
         Reason.BAD_REGION, Command.WRITE),
        (encode_frame(Command.WRITE, 11, write_payload("bias", DEPTHS["bias"], row, w)), 11,
         Reason.REGION_OVERFLOW, Command.WRITE),
        (encode_frame(Command.READ, 12, read_payload("taps", 5, 4)), 12,
         Reason.REGION_OVERFLOW, Command.READ),
        (encode_frame(Command.READ, 13, read_payload("taps", 1 << 31, 1)), 13,
         Reason.REGION_OVERFLOW, Command.READ),
    ]
    bad_crc = bytearray(encode_frame(Command.WRITE, 14, write_payload("bias", 0, row, w)))
    bad_crc[9] ^= 0x40
    seen = []

    async def scenario(ctx, host):
        probe = encode_frame(Command.READ, 99, read_payload("bias", 0, 1))
        for data, seq, reason, cmd in nak_cases:
            await host.send_bytes(ctx, data)
            seen.append((await host.reply(ctx), seq, reason, cmd))
        await host.send_bytes(ctx, bytes(bad_crc))
        seen.append((await host.reply(ctx), 14, Reason.BAD_CRC, Command.WRITE))
        # A frame cut short: the decoder times out and says so.
        await host.send_bytes(ctx, encode_frame(Command.STATUS, 15)[:5])
        seen.append((await host.reply(ctx), 15, Reason.TIMEOUT, Command.STATUS))
        # Nothing above wrote the bias memory.
        await host.send_bytes(ctx, probe)
        seen.append(await host.reply(ctx))
        await host.send_bytes(ctx, encode_frame(Command.STATUS, 16))
        seen.append(await host.reply(ctx))

    simulate(Bench(CONFIG, LINK, 2), scenario, 0)
    *naks, probe, status = seen
    for reply, seq, reason, cmd in naks:
        if seq is None:     # too long for the decoder: its NAK has the received seq byte
            seq = 9
        nak(reply, seq, reason, cmd)
    assert parse_rows(ack(probe, Command.READ, 99), WIDTHS["bias"]) == [0]
    counters = parse_status(ack(status, Command.STATUS, 16), CONFIG.cycle_bits).counters
    assert counters["naks"] == len(naks)
    assert counters["crc_errors"] == 1
    assert counters["length_errors"] == 1
    assert counters["timeouts"] == 1


def test_accelerator_faults():
    """BUSY while the accelerator is busy; a stuck inference, one with too many
    outputs, or an accelerator that takes no rows is reset and refused; RESET pulses
    the reset and clears the counters."""
    outputs = 2
    seen = {}

    async def scenario(ctx, host):
        acc = host.bench.acc
        inputs = run_payload([1, 2, 3], CONFIG.act_bits)
        row = write_payload("weights", 0, [5], WIDTHS["weights"])
        ctx.set(acc.hold_busy, 1)
        for seq, (cmd, payload) in enumerate([
                (Command.RUN, inputs), (Command.WRITE, row),
                (Command.READ, read_payload("weights", 0, 1))]):
            nak(await host.request(ctx, cmd, seq, payload), seq, Reason.BUSY, cmd)
        s = parse_status(ack(await host.request(ctx, Command.STATUS, 3), Command.STATUS, 3),
                         CONFIG.cycle_bits)
        assert s.busy
        ctx.set(acc.hold_busy, 0)
        assert host.resets == 0

        ctx.set(acc.stuck, 1)
        nak(await host.request(ctx, Command.RUN, 4, inputs), 4, Reason.ACCEL_TIMEOUT,
            Command.RUN)
        assert host.resets == 1
        ctx.set(acc.stuck, 0)
        ctx.set(acc.extra, 1)
        nak(await host.request(ctx, Command.RUN, 5, inputs), 5, Reason.OUTPUT_OVERFLOW,
            Command.RUN)
        assert host.resets == 2
        ctx.set(acc.extra, 0)
        # An accelerator that takes no rows: WRITE is refused; READ has already sent
        # its header, so its reply is spoilt on purpose and the host sees a bad CRC.
        ctx.set(acc.deaf, 1)
        nak(await host.request(ctx, Command.WRITE, 6, row), 6, Reason.ACCEL_TIMEOUT,
            Command.WRITE)
        assert host.resets == 3
        spoilt = await host.request(ctx, Command.READ, 7, read_payload("weights", 0, 2))
        assert spoilt == FrameError(Reason.BAD_CRC, Command.READ | REPLY, 7, 6), spoilt
        assert host.resets == 4
        ctx.set(acc.deaf, 0)
        # The resets left the stand-in ready for the next inference.
        r = await host.request(ctx, Command.RUN, 8, inputs)
        seen["run"] = parse_run_reply(ack(r, Command.RUN, 8), CONFIG.cycle_bits,
                                      CONFIG.acc_width)
        assert ack(await host.request(ctx, Command.RESET, 9), Command.RESET, 9) == b""
        assert host.resets == 5
        s = parse_status(ack(await host.request(ctx, Command.STATUS, 10), Command.STATUS, 10),
                         CONFIG.cycle_bits)
        seen["status"] = s

    simulate(Bench(CONFIG, LINK, outputs), scenario, 1)
    assert seen["run"] == standin_outputs(CONFIG, [1, 2, 3], [0] * 8, outputs)
    assert seen["status"].counters == dict.fromkeys(seen["status"].counters, 0) | {"frames": 1}


def test_watchdog_expires_after_run_timeout_cycles():
    """An accelerator that takes no row: the reset comes in the run_timeout-th cycle
    the row has been offered in vain, and the WRITE is refused."""
    seen = {}

    async def watch(ctx):
        acc, link = seen["bench"].acc, seen["bench"].link
        offered = 0
        async for _, _, valid, reset in ctx.tick().sample(acc.load.valid, link.accel_reset):
            offered = offered + 1 if valid else 0
            if reset:
                seen.setdefault("offered", offered)

    async def scenario(ctx, host):
        ctx.set(host.bench.acc.deaf, 1)
        row = write_payload("weights", 0, [5], WIDTHS["weights"])
        nak(await host.request(ctx, Command.WRITE, 1, row), 1, Reason.ACCEL_TIMEOUT,
            Command.WRITE)

    bench = seen["bench"] = Bench(CONFIG, LINK, 1)
    host = Host(bench, 5)

    async def main(ctx):
        await scenario(ctx, host)

    sim = Simulator(bench)
    sim.add_clock(1e-6)
    sim.add_testbench(host.collect, background=True)
    sim.add_testbench(watch, background=True)
    sim.add_testbench(main)
    sim.run()
    assert seen["offered"] == LINK.run_timeout


def test_status_counters_saturate_at_their_width():
    """With 2-bit counters, eight good frames and two NAKs count as 3 and 2 (sent as u16)."""
    link = dataclasses.replace(LINK, counter_bits=2)
    seen = {}

    async def scenario(ctx, host):
        for seq in range(5):
            ack(await host.request(ctx, Command.IDENTIFY, seq), Command.IDENTIFY, seq)
        for seq in (5, 6):
            nak(await host.request(ctx, 0x55, seq), seq, Reason.UNKNOWN_COMMAND, 0x55)
        r = await host.request(ctx, Command.STATUS, 7)
        seen["status"] = parse_status(ack(r, Command.STATUS, 7), CONFIG.cycle_bits)

    simulate(Bench(CONFIG, link, 2), scenario, 3)
    counters = seen["status"].counters
    assert counters["frames"] == 3 and counters["naks"] == 2
    assert sum(counters.values()) == 5


def test_status_counts_back_to_back_refusals():
    """Frames too long for the decoder, sent back to back: each bumps two counters a
    few cycles after the one before, and none of the bumps is lost on its way into the
    counter memory."""
    n = 12
    too_long = (LINK.max_payload + 1).to_bytes(2, "little")
    seen = {}

    async def scenario(ctx, host):
        await host.send_bytes(ctx, b"".join(bytes([SYNC, Command.STATUS, seq]) + too_long
                                            for seq in range(n)))
        seen["naks"] = [await host.reply(ctx) for _ in range(n)]
        r = await host.request(ctx, Command.STATUS, 99)
        seen["status"] = parse_status(ack(r, Command.STATUS, 99), CONFIG.cycle_bits)

    simulate(Bench(CONFIG, LINK, 1), scenario, 4)
    for seq, reply in enumerate(seen["naks"]):
        nak(reply, seq, Reason.BAD_LENGTH, Command.STATUS)
    counters = seen["status"].counters
    assert (counters["length_errors"], counters["naks"], counters["frames"]) == (n, n, 1)


def test_reply_after_garbage_and_back_to_back_frames():
    """Garbage between frames is skipped; two frames sent back to back are both
    answered, in order."""
    seen = []

    async def scenario(ctx, host):
        await host.send_bytes(ctx, b"\x00\x13\xff\x42" + encode_frame(Command.STATUS, 1)
                              + encode_frame(Command.IDENTIFY, 2))
        seen.append(await host.reply(ctx))
        seen.append(await host.reply(ctx))

    simulate(Bench(CONFIG, LINK, 1), scenario, 2)
    assert [(f.cmd, f.seq) for f in seen] == [(Command.STATUS | REPLY, 1),
                                               (Command.IDENTIFY | REPLY, 2)]


@pytest.mark.parametrize("seed", range(2))
def test_link_survives_random_requests(seed):
    """Random requests (known and unknown commands, random arguments and payloads)
    after garbage without sync bytes: every request gets exactly one reply, a
    well-formed frame, and afterwards the device still answers IDENTIFY."""
    rng = np.random.default_rng(seed)
    commands = [int(c) for c in Command] + [0x00, 0x42, 0x90]
    items = []
    for n in range(30):
        cmd = commands[int(rng.integers(0, len(commands)))]
        if cmd in (Command.WRITE, Command.READ) and rng.random() < 0.7:
            payload = bytes([int(rng.integers(0, 5))]) + int(rng.integers(0, 10)).to_bytes(
                4, "little") + int(rng.integers(0, 10)).to_bytes(2, "little")
            if cmd == Command.WRITE:
                payload += rng.bytes(int(rng.integers(0, LINK.max_payload - 6)))
        else:
            payload = rng.bytes(int(rng.integers(0, 3)) * int(rng.integers(0, 30)))
        garbage = rng.bytes(int(rng.integers(0, 6))).replace(bytes([SYNC]), b"")
        items.append((garbage, encode_frame(cmd, n, payload)))
    seen = {}

    async def scenario(ctx, host):
        replies = []
        for garbage, frame in items:
            await host.send_bytes(ctx, garbage)
            await host.send_bytes(ctx, frame, first_gap=LINK.byte_timeout)
            await ctx.tick().repeat(LINK.byte_timeout + 300)
            replies += host.events
            host.events.clear()
        seen["replies"] = replies
        seen["identify"] = await host.request(ctx, Command.IDENTIFY, 77)

    simulate(Bench(CONFIG, LINK, 2), scenario, seed)
    replies = seen["replies"]
    assert all(isinstance(r, Frame) for r in replies), f"seed {seed}"
    assert [r.seq for r in replies] == list(range(len(items))), f"seed {seed}"
    kinds = {Reason(r.payload[0]).name if r.cmd == Command.NAK else "ACK" for r in replies}
    assert {"ACK", "UNKNOWN_COMMAND", "BAD_LENGTH"} <= kinds, f"seed {seed}: {kinds}"
    assert ack(seen["identify"], Command.IDENTIFY, 77) == identify_payload(CONFIG, LINK)


class UARTHost(Host):
    """:class:`Host` on the UART lines: bytes are shifted in and out bit by bit."""

    async def collect(self, ctx):
        link = self.bench.link
        div = LINK.divisor

        async def wait(cycles):
            # Plain ticks: a background testbench may be left waiting when the
            # simulation ends, and must not be inside an async generator then.
            for _ in range(cycles):
                await ctx.tick()

        while True:
            while ctx.get(link.tx):
                await ctx.tick()
            # Middle of the start bit, then of each data bit and of the stop bit.
            await wait(div // 2)
            byte = 0
            for i in range(8):
                await wait(div)
                byte |= ctx.get(link.tx) << i
            await wait(div)
            assert ctx.get(link.tx) == 1, "stop bit"
            self.events += self.replies.feed(byte)

    async def send_bytes(self, ctx, data: bytes, first_gap: int = 0, stop: int = 1):
        link = self.bench.link
        for byte in data:
            for level in [0] + [(byte >> i) & 1 for i in range(8)] + [stop]:
                ctx.set(link.rx, level)
                await ctx.tick().repeat(LINK.divisor)
        ctx.set(link.rx, 1)


def test_uart_link_end_to_end():
    """Through the UART: IDENTIFY, WRITE, READ, RUN; a character with a bad stop bit
    is counted; three WRITEs sent back to back without waiting for the replies are
    all executed (the receive FIFO holds what arrives while one is handled)."""
    rng = np.random.default_rng(3)
    rows = [0x0AAAAA, 0x055555, 0x0F0F0F]
    images = {name: random_rows(rng, name) for name in ("program", "taps", "weights")}
    seen = {}

    async def scenario(ctx, host):
        seen["identity"] = ack(await host.request(ctx, Command.IDENTIFY, 1), Command.IDENTIFY, 1)
        r = await host.request(ctx, Command.WRITE, 2,
                               write_payload("weights", 2, rows, WIDTHS["weights"]))
        ack(r, Command.WRITE, 2)
        r = await host.request(ctx, Command.READ, 3, read_payload("weights", 2, 3))
        seen["rows"] = parse_rows(ack(r, Command.READ, 3), WIDTHS["weights"])
        r = await host.request(ctx, Command.RUN, 4, run_payload([7, 9], CONFIG.act_bits))
        seen["run"] = parse_run_reply(ack(r, Command.RUN, 4), CONFIG.cycle_bits,
                                      CONFIG.acc_width)
        await host.send_bytes(ctx, b"\x00", stop=0)
        await ctx.tick().repeat(LINK.divisor)       # the line high again for a bit
        await host.send_bytes(ctx, b"".join(
            encode_frame(Command.WRITE, 10 + n, write_payload(name, 0, rows, WIDTHS[name]))
            for n, (name, rows) in enumerate(images.items())))
        seen["acks"] = [await host.reply(ctx) for _ in images]
        for n, name in enumerate(images):
            r = await host.request(ctx, Command.READ, 20 + n, read_payload(name, 0, DEPTHS[name]))
            seen[name] = parse_rows(ack(r, Command.READ, 20 + n), WIDTHS[name])
        r = await host.request(ctx, Command.STATUS, 30)
        seen["status"] = parse_status(ack(r, Command.STATUS, 30), CONFIG.cycle_bits)

    simulate(Bench(CONFIG, LINK, 1, uart=True), scenario, 3, host_cls=UARTHost)
    assert parse_identify(seen["identity"]).divisor == LINK.divisor
    assert seen["rows"] == rows
    assert seen["run"] == standin_outputs(CONFIG, [7, 9], [0, 0] + rows, 1)
    assert [(f.cmd, f.seq, f.payload) for f in seen["acks"]] == [
        (Command.WRITE | REPLY, 10 + n, b"") for n in range(len(images))]
    for name, image in images.items():
        assert seen[name] == image, name
    counters = seen["status"].counters
    assert (counters["rx_framing_errors"], counters["rx_overruns"]) == (1, 0)
    assert counters["frames"] == 4 + len(images) + len(images) + 1


def test_handler_checks_sizes():
    link = LinkConfig(divisor=4, max_payload=64, byte_timeout=80)
    CommandHandler(CONFIG, link)
    big = AcceleratorConfig(out_depth=30)       # a RUN reply of 30 4-byte outputs > 64
    with pytest.raises(ValueError, match="max_payload.*RUN reply"):
        CommandHandler(big, link)


def test_identify_reports_the_given_hash():
    handler = CommandHandler(CONFIG, LINK, config_hash="0123456789abcdef")
    assert parse_identify(handler.identity).config_hash == "0123456789abcdef"
    with pytest.raises(ValueError, match="config_hash"):
        CommandHandler(CONFIG, LINK, config_hash="xyz")


@pytest.mark.parametrize("field, value", [("divisor", 3), ("max_payload", 63),
                                          ("byte_timeout", 10), ("run_timeout", 0),
                                          ("rx_fifo_depth", 1), ("divisor", 4.5),
                                          ("counter_bits", 0), ("counter_bits", 17)])
def test_link_config_is_checked(field, value):
    with pytest.raises(ValueError, match=field):
        LinkConfig(**{field: value})


def test_link_config_for_baud():
    link = LinkConfig.for_baud(12e6, 115200)
    assert link.divisor == 104 and link.byte_timeout == 240_000
    with pytest.raises(ValueError, match="baud"):
        LinkConfig.for_baud(1e6, 300_000)


def test_protocol_helpers():
    """Host-side builders and parsers: round trips and refusals."""
    rows = [0, 1, (1 << 44) - 1]
    payload = write_payload("bias", 5, rows, 44)
    assert payload[:7] == bytes([3, 5, 0, 0, 0, 3, 0])
    assert parse_rows(payload[7:], 44) == rows
    assert parse_run_reply(bytes([9, 0]) + (-2).to_bytes(3, "little", signed=True), 16, 22) \
        == (9, [-2])
    assert parse_nak(nak_payload(Reason.BUSY, Command.RUN)) == (Reason.BUSY, Command.RUN)
    assert region_code("weights") == 2
    with pytest.raises(ValueError, match="does not fit"):
        write_payload("bias", 0, [1 << 44], 44)
    with pytest.raises(ValueError, match="unknown region"):
        region_code("lut")
    with pytest.raises(ValueError, match="does not fit"):
        run_payload([256], 8)
    with pytest.raises(ValueError, match="too short"):
        parse_identify(b"\x01")
