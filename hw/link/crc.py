"""CRC-16/CCITT-FALSE in gateware, one byte per cycle.

The variant and its constants are those of :mod:`shiftpool.sw.host.crc`, the reference
this block is tested against.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...sw.host.crc import INIT, POLY

__all__ = ["CRC16", "crc16_next"]

#: Bits of the CRC register.
CRC_WIDTH = 16


def crc16_next(crc, byte) -> Value:
    """The CRC register after ``byte``, as a combinational expression.

    ``crc`` is a 16-bit value, ``byte`` an 8-bit one; the byte enters most
    significant bit first, as :func:`shiftpool.sw.host.crc.crc16_update` does.
    """
    crc, byte = Value.cast(crc), Value.cast(byte)
    # The update is linear over GF(2): run it on sets of input bits ("c3" is bit 3 of
    # the register, "d5" bit 5 of the byte) and emit one XOR per output bit, rather
    # than an expression tree that doubles with every step.
    state = [{f"c{i}"} ^ ({f"d{i - 8}"} if i >= 8 else set()) for i in range(CRC_WIDTH)]
    for _ in range(8):
        msb = state[CRC_WIDTH - 1]
        state = [(state[i - 1] if i else set()) ^ (msb if POLY >> i & 1 else set())
                 for i in range(CRC_WIDTH)]
    inputs = {**{f"c{i}": crc[i] for i in range(CRC_WIDTH)},
              **{f"d{i}": byte[i] for i in range(8)}}
    bits = []
    for terms in state:
        bit = Const(0, 1)
        for name in sorted(terms):
            bit = bit ^ inputs[name]
        bits.append(bit)
    return Cat(*bits)


class CRC16(wiring.Component):
    """A CRC-16/CCITT-FALSE register fed one byte per cycle.

    Members
    -------
    data : In(8)
        The byte added when ``en`` is high.
    en : In(1)
        Add ``data`` to the CRC in this cycle.
    clear : In(1)
        Start a new message: the register returns to ``0xFFFF``. With ``en`` in the
        same cycle, ``data`` is the new message's first byte.
    crc : Out(16)
        CRC of the bytes added since the last ``clear`` (registered: it includes a
        byte from the cycle after ``en``).
    """

    data: In(8)
    en: In(1)
    clear: In(1)
    crc: Out(CRC_WIDTH, init=INIT)

    def elaborate(self, platform):
        m = Module()
        base = Mux(self.clear, INIT, self.crc)
        with m.If(self.en):
            m.d.sync += self.crc.eq(crc16_next(base, self.data))
        with m.Elif(self.clear):
            m.d.sync += self.crc.eq(INIT)
        return m
