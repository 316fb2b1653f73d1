"""Frames over a byte stream: the decoder (bytes in, checked frames out) and the
encoder (reply header and payload in, bytes out).

A frame is ``SYNC, command, sequence, length (2 bytes, little-endian), payload
(length bytes), CRC (2 bytes, most significant first)``; the CRC is CRC-16/CCITT-FALSE
over command, sequence, length and payload (``docs/protocol.md``). The Python
reference of both blocks is :mod:`shiftpool.sw.host.frames`.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import crc, data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .protocol import CODE_BITS, LENGTH_BITS, SYNC, Reason

__all__ = [
    "FrameDecoder", "FrameEncoder", "event_layout", "frame_crc", "payload_layout",
    "reply_header_layout", "reply_payload_layout",
]


def frame_crc() -> crc.Processor:
    """The frames' CRC register, one byte per cycle (``amaranth.lib.crc``).

    ``start`` returns it to its initial value (with ``valid`` in the same cycle,
    ``data`` is the first byte of the new message); ``crc`` is registered. Nothing is
    reflected or XORed at the end, so a message followed by its CRC, most significant
    byte first, leaves ``crc == 0`` (``match_detected``).
    """
    return crc.catalog.CRC16_CCITT_FALSE(data_width=8).create()


def event_layout() -> data.StructLayout:
    """One frame event of the decoder.

    Members
    -------
    reason : a :class:`Reason`: ``OK`` for a good frame, else why the frame was dropped
    cmd, seq : the command and sequence bytes (0 if they had not arrived)
    length : the length field (as far as it had arrived)
    """
    return data.StructLayout({
        "reason": unsigned(CODE_BITS), "cmd": unsigned(CODE_BITS), "seq": 8,
        "length": unsigned(LENGTH_BITS),
    })


def payload_layout() -> data.StructLayout:
    """A payload byte of a good frame; ``last`` marks the frame's final byte."""
    return data.StructLayout({"data": 8, "last": 1})


def reply_header_layout() -> data.StructLayout:
    """What the encoder needs before a frame's payload."""
    return data.StructLayout({"cmd": 8, "seq": 8, "length": unsigned(LENGTH_BITS)})


def reply_payload_layout() -> data.StructLayout:
    """A payload byte to send. ``poison`` on any byte makes the encoder send the
    frame's CRC inverted, so that the receiver drops a frame the sender could not
    complete correctly (its length was already on the line)."""
    return data.StructLayout({"data": 8, "poison": 1})


def _check_positive(name: str, value, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < 1 or (hi is not None and value > hi):
        allowed = "at least 1" if hi is None else f"1..{hi}"
        raise ValueError(f"{name} = {value} is out of range; allowed: {allowed}")
    return value


class FrameDecoder(wiring.Component):
    """Finds, checks and buffers frames in a byte stream.

    Bytes before a ``SYNC`` byte are skipped. A frame whose length field exceeds
    ``max_payload`` is dropped as soon as the length has arrived; a frame that stops
    for ``timeout`` cycles (no byte for that many consecutive cycles after its sync
    byte) is dropped then; a frame whose CRC does not match is dropped at its end.
    Every drop is reported as an event with a reason, and the decoder goes back to
    looking for ``SYNC`` (it resynchronises inside the dropped frame's bytes, so a
    sync byte there may start a false frame, which its CRC rejects).

    A good frame is buffered whole until its CRC has been checked, then reported as
    an event with ``Reason.OK`` followed by its payload bytes. While an event or a
    good frame's payload is waiting to be taken, ``i`` is not ready.

    Parameters
    ----------
    max_payload : int
        Largest accepted length (1..65535); the depth of the payload buffer.
    timeout : int
        Idle cycles after which a partial frame is dropped.

    Members
    -------
    i : In(stream.Signature(8))
        The byte stream.
    event : Out(stream.Signature(event_layout()))
        One event per good or dropped frame.
    payload : Out(stream.Signature(payload_layout()))
        The ``length`` payload bytes of a good frame, after its event.
    idle : Out(1)
        Looking for a sync byte, with nothing received and nothing waiting.
    """

    def __init__(self, max_payload: int, timeout: int):
        self._max_payload = _check_positive("max_payload", max_payload, (1 << LENGTH_BITS) - 1)
        self._timeout = _check_positive("timeout", timeout)
        super().__init__({
            "i": In(stream.Signature(8)),
            "event": Out(stream.Signature(event_layout())),
            "payload": Out(stream.Signature(payload_layout())),
            "idle": Out(1),
        })

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @property
    def timeout(self) -> int:
        return self._timeout

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = check = frame_crc()
        m.submodules.buffer = buf = memory.Memory(shape=8, depth=self._max_payload, init=[])
        wp, rp = buf.write_port(), buf.read_port()

        # All set at a sync byte: no reset needed (which saves a LUT per flip-flop
        # with an enable on the iCE40).
        ev = Signal(event_layout(), reset_less=True)
        count = Signal(range(self._max_payload + 1), reset_less=True)
        # Idle cycles inside a frame, from 2**w - (timeout - 1): bit w (the carry out
        # of the count) is set on the timeout-th idle cycle, no compare needed.
        timer_w = ceil_log2(self._timeout)
        timer = Signal(timer_w + 1, reset_less=True)
        timer_start = (1 << timer_w) - (self._timeout - 1)
        byte = self.i.payload
        m.d.comb += [
            self.event.payload.eq(ev),
            check.data.eq(byte),
            wp.addr.eq(count), wp.data.eq(byte),
            self.payload.payload.data.eq(rp.data),
            self.payload.payload.last.eq(count + 1 == ev.length),
        ]

        def receive(state, action):
            """A state inside a frame: take a byte and ``action(m)``, or time out."""
            with m.State(state):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += check.valid.eq(1)
                    m.d.sync += timer.eq(timer_start)
                    action()
                with m.Elif(timer[timer_w]):
                    m.d.sync += ev.reason.eq(Reason.TIMEOUT)
                    m.next = "EVENT"
                with m.Else():
                    m.d.sync += timer.eq(timer + 1)

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += [self.i.ready.eq(1), self.idle.eq(1)]
                with m.If(self.i.valid & (byte == SYNC)):
                    m.d.comb += check.start.eq(1)
                    m.d.sync += [ev.eq(0), timer.eq(timer_start), count.eq(0)]
                    m.next = "CMD"

            def on_cmd():
                m.d.sync += ev.cmd.eq(byte)
                m.next = "SEQ"

            def on_seq():
                m.d.sync += ev.seq.eq(byte)
                m.next = "LEN0"

            def on_len0():
                m.d.sync += ev.length.eq(byte)
                m.next = "LEN1"

            def on_len1():
                length = Cat(ev.length[:8], byte)
                m.d.sync += ev.length.eq(length)
                with m.If(length > self._max_payload):
                    m.d.sync += ev.reason.eq(Reason.BAD_LENGTH)
                    m.next = "EVENT"
                with m.Elif(length == 0):
                    m.next = "CRC0"
                with m.Else():
                    m.next = "DATA"

            def on_data():
                m.d.comb += wp.en.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count + 1 == ev.length):
                    m.next = "CRC0"

            def on_crc0():
                m.next = "CRC1"

            def on_crc1():
                m.next = "CHECK"

            for state, action in [("CMD", on_cmd), ("SEQ", on_seq), ("LEN0", on_len0),
                                  ("LEN1", on_len1), ("DATA", on_data), ("CRC0", on_crc0),
                                  ("CRC1", on_crc1)]:
                receive(state, action)

            with m.State("CHECK"):
                # The CRC over the frame including its CRC (most significant byte first) is the
                # residue, 0.
                m.d.sync += count.eq(0)
                with m.If(check.match_detected):
                    m.d.sync += ev.reason.eq(Reason.OK)
                with m.Else():
                    m.d.sync += ev.reason.eq(Reason.BAD_CRC)
                m.next = "EVENT"
            with m.State("EVENT"):
                m.d.comb += [self.event.valid.eq(1), rp.addr.eq(0)]
                with m.If(self.event.ready):
                    with m.If((ev.reason == Reason.OK) & (ev.length != 0)):
                        m.next = "PAYLOAD"
                    with m.Else():
                        m.next = "HUNT"
            with m.State("PAYLOAD"):
                # The read port shows the row addressed in the previous cycle: address
                # the next byte in the cycle the current one is taken.
                take = self.payload.ready
                m.d.comb += [self.payload.valid.eq(1), rp.addr.eq(Mux(take, count + 1, count))]
                with m.If(take):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count + 1 == ev.length):
                        m.next = "HUNT"
        return m


class FrameEncoder(wiring.Component):
    """Sends a frame for each reply header and its payload bytes.

    Parameters
    ----------
    max_payload : int
        Largest length a header may carry (1..65535, the default): the encoder's
        length and byte counter are only as wide as it needs.

    Members
    -------
    header : In(stream.Signature(reply_header_layout()))
        Command, sequence and length of the next frame.
    payload : In(stream.Signature(reply_payload_layout()))
        Exactly ``length`` bytes after each header.
    o : Out(stream.Signature(8))
        The frame's bytes.
    """

    def __init__(self, max_payload: int = (1 << LENGTH_BITS) - 1):
        self._max_payload = _check_positive("max_payload", max_payload, (1 << LENGTH_BITS) - 1)
        super().__init__({
            "header": In(stream.Signature(reply_header_layout())),
            "payload": In(stream.Signature(reply_payload_layout())),
            "o": Out(stream.Signature(8)),
        })

    @property
    def max_payload(self) -> int:
        return self._max_payload

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = check = frame_crc()
        # All set with each header: no reset needed. The length's bits above
        # max_payload's are zero.
        hdr = Signal(reply_header_layout(), reset_less=True)
        length = Signal(range(self._max_payload + 1), reset_less=True)
        count = Signal.like(length, reset_less=True)
        poison = Signal(reset_less=True)
        sent = self.o.valid & self.o.ready
        # The payload's byte unless a state says otherwise: no state gates it.
        m.d.comb += [check.data.eq(self.o.payload), self.o.payload.eq(self.payload.payload.data)]
        spoil = Mux(poison, 0xFF, 0x00)

        def send(state, value, then, *, in_crc=True):
            with m.State(state):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(value),
                             check.valid.eq(sent & in_crc)]
                with m.If(self.o.ready):
                    m.next = then

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.header.ready.eq(1), check.start.eq(1)]
                with m.If(self.header.valid):
                    m.d.sync += [hdr.eq(self.header.payload), length.eq(self.header.payload.length),
                                 count.eq(0), poison.eq(0)]
                    m.next = "SYNC"
            send("SYNC", SYNC, "CMD", in_crc=False)
            send("CMD", hdr.cmd, "SEQ")
            send("SEQ", hdr.seq, "LEN0")
            send("LEN0", length[:8], "LEN1")
            with m.State("LEN1"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(length[8:]),
                             check.valid.eq(sent)]
                with m.If(self.o.ready):
                    m.next = "DATA"
                    with m.If(length == 0):
                        m.next = "CRC0"
            with m.State("DATA"):
                m.d.comb += [self.o.valid.eq(self.payload.valid),
                             self.payload.ready.eq(self.o.ready), check.valid.eq(sent)]
                with m.If(sent):
                    m.d.sync += [count.eq(count + 1),
                                 poison.eq(poison | self.payload.payload.poison)]
                    with m.If(count + 1 == length):
                        m.next = "CRC0"
            send("CRC0", check.crc[8:] ^ spoil, "CRC1", in_crc=False)
            send("CRC1", check.crc[:8] ^ spoil, "IDLE", in_crc=False)
        return m
