"""The RBNN binary engine: every product is ``+a`` or ``-a`` by one bit of a storage slot."""

from __future__ import annotations

from amaranth.hdl import Mux, Signal, unsigned
from amaranth.lib import data

from ..program import round_width
from .common import AccumulatingEngine, register_engine

__all__ = ["BinaryEngine"]


@register_engine
class BinaryEngine(AccumulatingEngine):
    """RBNN engine: the codes are the trainer's ``slot_bits``-bit storage slots as they
    lie in the weight memory; a beat's ``round`` says which of their bits is the weight:
    bit ``slot_bits - 1 - round``, 0 for ``+act`` and 1 for ``-act``. No multipliers.

    Behaviour and handshake are those of
    :class:`~shiftpool.hw.engines.common.AccumulatingEngine`; the input payload adds

    round : unsigned(round_width(config))  (``hw/program.py``)
        The RBNN round of the beat's weights, below ``slot_bits``.

    Parameters
    ----------
    config : AcceleratorConfig
        With ``engine == "binary"``; codes are ``slot_bits`` wide.
    """

    engine = "binary"

    @classmethod
    def code_shape(cls, config):
        """``unsigned(slot_bits)``: one storage slot."""
        return unsigned(config.slot_bits)

    @classmethod
    def input_layout(cls, config) -> data.StructLayout:
        base = super().input_layout(config)
        return data.StructLayout({**{name: f.shape for name, f in base},
                                  "round": unsigned(round_width(config))})

    def term(self, code, act):
        return Mux(code.bit_select(self._sign_bit, 1), -act, act)

    def elaborate(self, platform):
        # The sign's position in every slot of the beat: one subtraction, shared.
        self._sign_bit = Signal(range(self.config.slot_bits), name="sign_bit")
        m = super().elaborate(platform)
        m.d.comb += self._sign_bit.eq(self.config.slot_bits - 1 - self.i.payload.round)
        return m
