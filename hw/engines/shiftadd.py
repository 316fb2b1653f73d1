"""The FLightNN shift-add engine: every product is one shift and a one's complement."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, unsigned
from amaranth.lib import data

from .common import AccumulatingEngine, register_engine

__all__ = ["ShiftAddEngine"]


@register_engine
class ShiftAddEngine(AccumulatingEngine):
    """FLightNN engine: ``term = 0`` if not ``nonzero``, else ``act << exp``, or its one's
    complement ``-(act << exp) - 1`` if ``sign``.

    No multipliers, and no negation: a term is ``value * act - neg`` with ``neg = sign &
    nonzero`` (:func:`~shiftpool.sw.compile.engine_model.code_offset`), so a dot
    product comes out short by the number of negative codes that took part, whatever
    the activations (a masked activation is 0, and its negative code still counts).
    That count is a constant of each filter: the compiler adds it to the filter's bias
    (``docs/model-format.md`` §2.7), and the layer's results are exact. The two's
    complement negation it saves is a carry chain per term: about 28% of the engine's
    LUT4 (``python -m shiftpool.boards.units --part engine``).

    A weight of two terms (a k=2 filter) takes two beats: the controller sends the
    second terms with ``first = 0``. Behaviour and handshake are those of
    :class:`~shiftpool.hw.engines.common.AccumulatingEngine`.

    Parameters
    ----------
    config : AcceleratorConfig
        With ``engine == "shiftadd"``; codes are ``exp_bits + 2`` bits wide.

    Members
    -------
    i : In(stream.Signature(engine_input_layout(config)))
    o : Out(stream.Signature(engine_output_layout(config)))
    """

    engine = "shiftadd"

    @classmethod
    def code_shape(cls, config):
        """A struct, LSB first: ``exp`` (``exp_bits``), ``sign`` (1), ``nonzero`` (1); the
        packed integer ``exp | sign << E | nonzero << (E + 1)`` stands for ``0`` if not
        ``nonzero``, else ``(-1)**sign * 2**exp``."""
        return data.StructLayout({"exp": unsigned(config.exp_bits), "sign": 1, "nonzero": 1})

    def term(self, code, act):
        # `nonzero` gates the activation, a shifter of one 2:1 multiplexer per exponent
        # bit, then the sign flips every bit.
        shifted = Mux(code.nonzero, act, 0)
        for b in range(len(code.exp)):
            shifted = Mux(code.exp[b], shifted << (1 << b), shifted)
        width = len(act) + (1 << len(code.exp)) - 1
        neg = code.sign & code.nonzero
        return (Cat(shifted[:width], Const(0, 1)) ^ neg.replicate(width + 1)).as_signed()
