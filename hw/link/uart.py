"""UART receiver and transmitter: 8 data bits, no parity, 1 stop bit (8N1).

Bits go least significant first. The line idles high; a character is a low start bit,
the 8 data bits and a high stop bit, each ``divisor`` clock cycles long.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["DATA_BITS", "UARTReceiver", "UARTTransmitter", "check_divisor"]

#: Data bits per character.
DATA_BITS = 8
#: Smallest divisor: the receiver needs a middle of the bit that is not its edge.
MIN_DIVISOR = 4


def check_divisor(divisor) -> int:
    """``divisor`` if it is a valid number of clock cycles per bit."""
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"divisor must be an integer, not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR} clock cycles per bit, "
                         f"not {divisor}")
    return divisor


class UARTReceiver(wiring.Component):
    """Receives 8N1 characters from an asynchronous line.

    The line passes a two-flop synchronizer. A falling edge starts a character; the
    start bit is sampled again half a bit later, and if the line is high by then the
    edge was a glitch and is ignored. Each data bit and the stop bit are sampled in
    their middle, counted from the start edge, so the sender's bit time may differ
    from ours by a few percent. A character whose stop bit is low is dropped and
    flagged; the receiver then waits for the line to go high (a break ends).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : In(1)
        The line (idle high). Asynchronous to the clock.
    o : Out(stream.Signature(8))
        Received characters. The stream cannot stop the line: a character that ends
        while the previous one is still not taken is dropped and flagged.
    framing_error : Out(1)
        High for one cycle when a character's stop bit was low.
    overrun : Out(1)
        High for one cycle when a character was dropped because ``o`` was full.
    """

    def __init__(self, divisor: int):
        self._divisor = check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(DATA_BITS)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)

        # Set at each start edge: no reset needed.
        timer = Signal(range(div), reset_less=True)
        bit = Signal(range(DATA_BITS), reset_less=True)
        shreg = Signal(DATA_BITS, reset_less=True)
        done = Signal()

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(done):
            with m.If(self.o.valid & ~self.o.ready):
                m.d.comb += self.overrun.eq(1)
            with m.Else():
                m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]

        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # The edge fell during the previous cycle; the middle of the start
                    # bit is half a bit after it.
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(line):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), timer.eq(div - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == DATA_BITS - 1):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    # Back to IDLE in the middle of the stop bit, so that a sender a
                    # little faster than us is still caught at its next start edge.
                    with m.If(line):
                        m.d.comb += done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTransmitter(wiring.Component):
    """Sends 8N1 characters back to back at ``divisor`` cycles per bit.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    i : In(stream.Signature(8))
        Characters to send; one is taken while the line is idle or in the last cycle
        of a stop bit, so a stream that never runs dry fills the line completely.
    tx : Out(1)
        The line (a register; idle high).
    """

    def __init__(self, divisor: int):
        self._divisor = check_divisor(divisor)
        super().__init__({
            "i": In(stream.Signature(DATA_BITS)),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div), reset_less=True)         # set with each character
        left = Signal(range(DATA_BITS + 3))     # bits of the character still on the line
        shreg = Signal(DATA_BITS + 1, reset_less=True)      # data bits then the stop bit

        bit_end = timer == 0
        m.d.comb += self.i.ready.eq((left == 0) | ((left == 1) & bit_end))
        with m.If(left != 0):
            m.d.sync += timer.eq(timer - 1)
            with m.If(bit_end):
                m.d.sync += [timer.eq(div - 1), left.eq(left - 1),
                             self.tx.eq(shreg[0]), shreg.eq(shreg[1:])]
                with m.If(left == 1):
                    m.d.sync += self.tx.eq(1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.tx.eq(0), timer.eq(div - 1), left.eq(DATA_BITS + 2),
                         shreg.eq(Cat(self.i.payload, 1))]
        return m
