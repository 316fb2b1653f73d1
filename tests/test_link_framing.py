# amaranth: UnusedElaboratable=no
"""CRC-16 block, frame encoder and frame decoder (``shiftpool.hw.link``) against their
Python references (``shiftpool.sw.host.crc``, ``shiftpool.sw.host.frames``) in Amaranth's
simulator. The decoder is fuzzed with seeded random byte streams in which good frames
sit between garbage, corrupted, truncated and oversized frames."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator
from shiftpool.hw.link.framing import FrameDecoder, FrameEncoder, frame_crc
from shiftpool.hw.link.protocol import (
    REPLY,
    SYNC,
    Command,
    Reason,
    nak_payload,
    run_payload,
)
from shiftpool.sw.host.crc import CHECK, crc16
from shiftpool.sw.host.frames import Frame, FrameError, encode_frame
from shiftpool.sw.host.frames import FrameDecoder as RefDecoder

# -- CRC --------------------------------------------------------------------------------


def test_reference_check_value():
    assert crc16(b"123456789") == CHECK == 0x29B1
    message = b"shiftpool"
    # Appending the CRC most significant byte first leaves a zero register.
    assert crc16(message + crc16(message).to_bytes(2, "big")) == 0


def rtl_crc(messages, seed: int):
    """The frames' CRC register after each message, fed with random idle cycles; each
    message after the first starts with ``start`` and ``valid`` in the same cycle."""
    dut = frame_crc()
    rng = np.random.default_rng(seed)
    got = []

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for n, message in enumerate(messages):
            for i, byte in enumerate(message):
                while rng.random() < 0.3:
                    ctx.set(dut.valid, 0)
                    await ctx.tick()
                ctx.set(dut.start, int(n > 0 and i == 0))
                ctx.set(dut.data, byte)
                ctx.set(dut.valid, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
            ctx.set(dut.valid, 0)
            await ctx.tick()
            got.append(ctx.get(dut.crc))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("seed", range(3))
def test_crc_block_matches_reference(seed):
    rng = np.random.default_rng(seed)
    messages = [b"123456789"] + [bytes(rng.integers(0, 256, size=int(n)).tolist())
                                 for n in rng.integers(1, 40, size=12)]
    assert rtl_crc(messages, seed) == [crc16(msg) for msg in messages], f"seed {seed}"


# -- encoder ----------------------------------------------------------------------------


def rtl_encode(frames, seed: int, poison=()):
    """Bytes the encoder sends for ``frames`` ((cmd, seq, payload) tuples), with idle
    sources and a stalling sink; frames whose index is in ``poison`` have their last
    payload byte poisoned."""
    dut = FrameEncoder()
    rng = np.random.default_rng(seed)
    out = []
    total = sum(len(encode_frame(c, s, p)) for c, s, p in frames)

    async def source(ctx):
        for n, (cmd, seq, payload) in enumerate(frames):
            ctx.set(dut.header.payload, {"cmd": cmd, "seq": seq, "length": len(payload)})
            ctx.set(dut.header.valid, 1)
            await ctx.tick().until(dut.header.ready)
            ctx.set(dut.header.valid, 0)
            for i, byte in enumerate(payload):
                while rng.random() < 0.3:
                    ctx.set(dut.payload.valid, 0)
                    await ctx.tick()
                spoil = int(n in poison and i == len(payload) - 1)
                ctx.set(dut.payload.payload, {"data": byte, "poison": spoil})
                ctx.set(dut.payload.valid, 1)
                await ctx.tick().until(dut.payload.ready)
            ctx.set(dut.payload.valid, 0)

    async def sink(ctx):
        sink_rng = np.random.default_rng(seed + 1)
        for _ in range(20 * total + 100):
            if len(out) == total:
                return
            ready = int(sink_rng.random() < 0.6)
            ctx.set(dut.o.ready, ready)
            _, _, valid, byte = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                out.append(int(byte))
        raise AssertionError("the encoder stopped sending")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return bytes(out)


def random_frames(rng, n: int, max_len: int):
    return [(int(rng.integers(0, 256)), int(rng.integers(0, 256)),
             bytes(rng.integers(0, 256, size=int(rng.integers(0, max_len + 1))).tolist()))
            for _ in range(n)]


@pytest.mark.parametrize("seed", range(3))
def test_encoder_matches_reference(seed):
    rng = np.random.default_rng(seed)
    frames = random_frames(rng, 12, 30) + [(0x81, 7, b"")]
    expected = b"".join(encode_frame(*f) for f in frames)
    assert rtl_encode(frames, seed) == expected, f"seed {seed}"


def test_encoder_poison_spoils_the_crc():
    frames = [(0x91, 3, b"abc"), (0x91, 4, b"def")]
    got = rtl_encode(frames, 0, poison={0})
    good = [encode_frame(*f) for f in frames]
    spoilt = good[0][:-2] + bytes(b ^ 0xFF for b in good[0][-2:])
    assert got == spoilt + good[1]
    events = RefDecoder(64).feed_bytes(got)
    assert [type(e) for e in events] == [FrameError, Frame]
    assert events[0].reason == Reason.BAD_CRC


# -- decoder ----------------------------------------------------------------------------


def rtl_decode(items, max_payload: int, timeout: int, seed: int, ready: float = 0.6):
    """Events of the decoder for ``items`` ((byte, idle cycles before it) pairs), with
    a stalling sink; also whether the decoder is idle at the end."""
    dut = FrameDecoder(max_payload, timeout)
    rng = np.random.default_rng(seed)
    events = []
    done = {"source": False, "idle": None}

    async def source(ctx):
        for byte, gap in items:
            if gap:
                ctx.set(dut.i.valid, 0)
                await ctx.tick().repeat(gap)
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        done["source"] = True

    async def sink(ctx):
        frame = None
        quiet = 0
        # After the source ends: the timeout, then the events draining, then idle.
        while quiet < 2 * timeout + 4 * max_payload + 20:
            ev_ready = int(rng.random() < ready)
            pl_ready = int(rng.random() < ready)
            ctx.set(dut.event.ready, ev_ready)
            ctx.set(dut.payload.ready, pl_ready)
            _, _, ev_valid, ev, pl_valid, pl = await ctx.tick().sample(
                dut.event.valid, dut.event.payload, dut.payload.valid, dut.payload.payload)
            assert not (ev_valid and pl_valid)
            if ev_ready and ev_valid:
                assert frame is None, "an event arrived inside a frame's payload"
                reason = Reason(ev.reason)
                if reason == Reason.OK:
                    frame = (ev.cmd, ev.seq, ev.length, bytearray())
                    if ev.length == 0:
                        events.append(Frame(ev.cmd, ev.seq, b""))
                        frame = None
                else:
                    events.append(FrameError(reason, ev.cmd, ev.seq, ev.length))
            if pl_ready and pl_valid:
                assert frame is not None, "a payload byte arrived without an event"
                frame[3].append(pl.data)
                assert pl.last == (len(frame[3]) == frame[2])
                if pl.last:
                    events.append(Frame(frame[0], frame[1], bytes(frame[3])))
                    frame = None
            quiet = quiet + 1 if done["source"] else 0
        done["idle"] = bool(ctx.get(dut.idle)) and not ctx.get(dut.event.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return events, done["idle"]


def ref_decode(items, max_payload: int, timeout: int):
    ref = RefDecoder(max_payload, timeout)
    events = []
    for byte, gap in items:
        events += ref.feed(byte, gap)
    return events + ref.expire()


def flip_bits(rng, frame: bytes, n: int) -> bytes:
    """``frame`` with ``n`` distinct bits flipped after its sync byte."""
    out = bytearray(frame)
    for pos in rng.choice(8 * (len(frame) - 1), size=n, replace=False):
        out[1 + pos // 8] ^= 1 << (pos % 8)
    return bytes(out)


def fuzz_items(rng, n_frames: int, max_payload: int, timeout: int):
    """A byte stream of ``n_frames`` good frames, each after a random stretch of
    trouble and an idle gap of twice the timeout. Returns the (byte, gap) items, the
    good frames, and every frame that was sent intact (the good ones and some in the
    trouble, which the decoder may or may not see whole)."""
    items, good, intact = [], [], []

    def put(data: bytes, max_gap: int):
        for byte in data:
            items.append((byte, int(rng.integers(0, max_gap + 1)) if rng.random() < 0.3 else 0))

    def some_frame(max_len=max_payload):
        n = int(rng.integers(0, max_len + 1))
        frame = Frame(int(rng.integers(0, 256)), int(rng.integers(0, 256)),
                      bytes(rng.integers(0, 256, size=n).tolist()))
        intact.append(frame)
        return encode_frame(frame.cmd, frame.seq, frame.payload)

    for _ in range(n_frames):
        for _ in range(int(rng.integers(0, 4))):
            trouble = rng.integers(0, 6)
            if trouble == 0:        # garbage, rich in sync bytes
                n = int(rng.integers(1, 24))
                put(bytes(SYNC if rng.random() < 0.2 else int(rng.integers(0, 256))
                          for _ in range(n)), 3)
            elif trouble == 1:      # a frame with 1 to 3 bits flipped
                frame = some_frame()
                intact.pop()
                put(flip_bits(rng, frame, int(rng.integers(1, 4))), 3)
            elif trouble == 2:      # a frame cut short, then silence
                frame = some_frame()
                intact.pop()
                put(frame[:int(rng.integers(1, len(frame)))], 3)
                items.append((int(rng.integers(0, 256)), 2 * timeout))
            elif trouble == 3:      # a length above max_payload
                length = int(rng.integers(max_payload + 1, 1 << 16))
                put(bytes([SYNC, 1, 2]) + length.to_bytes(2, "little")
                    + bytes(rng.integers(0, 256, size=6).tolist()), 3)
            elif trouble == 4:      # a stall just short of the timeout inside a frame
                frame = some_frame(8)
                cut = int(rng.integers(1, len(frame)))
                put(frame[:cut], 0)
                items.append((frame[cut], timeout - 1))
                put(frame[cut + 1:], 0)
            else:                   # a good frame that is not announced as such
                put(some_frame(), 3)
        frame = (int(rng.integers(0, 256)), int(rng.integers(0, 256)),
                 bytes(rng.integers(0, 256, size=int(rng.integers(0, max_payload + 1))).tolist()))
        data = encode_frame(*frame)
        items.append((data[0], 2 * timeout))
        put(data[1:], timeout // 3)
        good.append(Frame(*frame))
        intact.append(Frame(*frame))
    return items, good, intact


@pytest.mark.parametrize("seed", range(8))
def test_decoder_fuzz(seed):
    max_payload, timeout = 24, 30
    rng = np.random.default_rng(seed)
    items, good, intact = fuzz_items(rng, 40, max_payload, timeout)
    expected = ref_decode(items, max_payload, timeout)
    got, idle = rtl_decode(items, max_payload, timeout, seed)
    assert got == expected, f"seed {seed}"
    accepted = [e for e in got if isinstance(e, Frame)]
    corrupted = [f for f in accepted if f not in intact]
    assert corrupted == [], f"seed {seed}: accepted frames that were never sent"
    it = iter(accepted)
    assert all(any(f == g for f in it) for g in good), f"seed {seed}: a good frame was lost"
    assert idle, f"seed {seed}: the decoder did not return to idle"


def test_decoder_hand_cases():
    max_payload, timeout = 16, 20
    good = encode_frame(0x01, 9, b"hi")
    items = []

    def put(data, first_gap=0):
        items.extend((b, first_gap if i == 0 else 0) for i, b in enumerate(data))

    put(b"\x00\xff" + good)                                     # garbage, then a frame
    bad_crc = bytearray(encode_frame(0x10, 1, b"abc"))
    bad_crc[-1] ^= 0x01
    put(bytes(bad_crc))
    put(good)
    put(bytes([SYNC, 0x11, 2, 17, 0]))                          # length 17 > 16
    put(good)
    put(encode_frame(0x20, 3, b"xyz")[:6])                      # cut short
    put(good, first_gap=timeout)
    put(encode_frame(0x02, 4, b"")[:4])                         # cut inside the length
    put(good, first_gap=timeout)
    got, idle = rtl_decode(items, max_payload, timeout, seed=0)
    frame = Frame(0x01, 9, b"hi")
    assert got == [
        frame,
        FrameError(Reason.BAD_CRC, 0x10, 1, 3), frame,
        FrameError(Reason.BAD_LENGTH, 0x11, 2, 17), frame,
        FrameError(Reason.TIMEOUT, 0x20, 3, 3), frame,
        FrameError(Reason.TIMEOUT, 0x02, 4, 0), frame,
    ]
    assert got == ref_decode(items, max_payload, timeout)
    assert idle


def test_decoder_timeout_boundary():
    """A gap of timeout - 1 cycles keeps the frame; a gap of timeout drops it."""
    timeout = 12
    data = encode_frame(0x03, 5, b"ok")
    for gap, expect_frame in [(timeout - 1, True), (timeout, False)]:
        items = [(b, gap if i == 4 else 0) for i, b in enumerate(data)]
        got, _ = rtl_decode(items, 8, timeout, seed=gap, ready=1.0)
        assert (Frame(0x03, 5, b"ok") in got) == expect_frame, f"gap {gap}"
        assert got == ref_decode(items, 8, timeout)


@pytest.mark.parametrize("kwargs", [{"max_payload": 0, "timeout": 5},
                                    {"max_payload": 1 << 16, "timeout": 5},
                                    {"max_payload": 8, "timeout": 0},
                                    {"max_payload": 8.0, "timeout": 5}])
def test_decoder_parameters_are_checked(kwargs):
    with pytest.raises((TypeError, ValueError), match="max_payload|timeout"):
        FrameDecoder(**kwargs)


def test_protocol_doc_examples():
    """The example frames in docs/protocol.md are what the reference encoder makes."""
    doc = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
    examples = [
        encode_frame(Command.IDENTIFY, 1),
        encode_frame(Command.IDENTIFY | REPLY, 1),
        encode_frame(Command.RUN, 3, run_payload([1, 2, 255], 8)),
        encode_frame(Command.NAK, 7, nak_payload(Reason.BAD_CRC, Command.WRITE)),
    ]
    for frame in examples:
        assert frame.hex(" ") in doc
    assert crc16(b"123456789") == int(re.search(r"= (0x[0-9A-F]{4})`", doc)[1], 16)
