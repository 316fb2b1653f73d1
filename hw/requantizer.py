"""Integer requantization: accumulator -> unsigned activation (``docs/arithmetic.md``)."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .program import count_width

__all__ = ["Requantizer", "requantize"]


def requantize(m: Module, value, shift, act_bits: int, half_even: bool = False):
    """Add the comb logic of ``clip((value + 2**(shift-1)) >> shift, 0, 2**act_bits - 1)``
    (no rounding term when ``shift = 0``) to ``m`` and return the result signal; with
    ``half_even`` a value exactly halfway between two steps goes to the even one.

    This sits on the write-back path, the longest of the accelerator, so it is built
    for depth: with ``x = (2 * value) >> shift``, the result is ``(x + 1) >> 1`` (the
    same number for every shift, 0 included), which needs only the low ``act_bits +
    1`` bits of ``x`` (a narrow shifter and a narrow increment), and it saturates when
    ``x >= 2**(act_bits + 1) - 1``: those low bits all ones, or ``value >=
    2**(act_bits + shift)``, some bit ``i >= act_bits + shift`` of ``value`` set, which
    is tested on ``value`` itself, beside the shifter rather than after it.
    """
    x = Signal(signed(len(value) + 1))
    m.d.comb += x.eq((value << 1) >> shift)
    low = x[:act_bits + 1]
    above = [value[i] & (shift <= i - act_bits) for i in range(act_bits, len(value) - 1)]
    saturate = low == (1 << (act_bits + 1)) - 1
    if above:
        saturate = saturate | Cat(*above).any()
    rounded = Signal(unsigned(act_bits + 1))
    if half_even:
        # A tie: the half bit (x[0]) set and every bit below it clear, i.e. value's
        # bits 0 .. shift-2 (a mask of shift-1 ones). Then the even neighbour is x >> 1
        # when x[1] is clear, (x >> 1) + 1 (half up) when it is set. The mask is zero
        # for shift <= 1, where x[0] alone decides (shift 0 makes x[0] = 0: no tie).
        below = Signal(len(value))
        m.d.comb += below.eq(value & ((Const(1, len(value) + 1) << shift) >> 1) - 1)
        tie = low[0] & (below == 0)
        m.d.comb += rounded.eq((low + ~(tie & ~low[1])) >> 1)
    else:
        m.d.comb += rounded.eq((low + 1) >> 1)
    top = (1 << act_bits) - 1
    result = Signal(unsigned(act_bits))
    m.d.comb += result.eq(Mux(value[-1], 0, Mux(saturate, top, rounded)))
    return result


class Requantizer(wiring.Component):
    """Stream requantizer with one register stage.

    Parameters
    ----------
    config : AcceleratorConfig
        Sets the accumulator width, the shift range and the activation width.

    Members
    -------
    i : In(stream.Signature(StructLayout({"value": signed(acc_width), "shift": ...})))
        Accumulator values and the shift to apply.
    o : Out(stream.Signature(unsigned(act_bits)))
        ``clip((value + 2**(shift-1)) >> shift, 0, 2**act_bits - 1)``.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        layout = data.StructLayout({
            "value": signed(config.acc_width),
            "shift": unsigned(count_width(config.max_shift)),
        })
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(unsigned(config.act_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        result = requantize(m, self.i.payload.value, self.i.payload.shift,
                            self.config.act_bits,
                            half_even=self.config.rounding == "half_even")
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(result)]
        return m
