"""The FLightNN shift-add engine: every product is one shift and a conditional negation."""

from __future__ import annotations

from amaranth.hdl import Mux, unsigned
from amaranth.lib import data

from .common import AccumulatingEngine, register_engine

__all__ = ["ShiftAddEngine"]


@register_engine
class ShiftAddEngine(AccumulatingEngine):
    """FLightNN engine: ``term = 0`` if not ``nonzero``, else ``(-1)**sign * (act << exp)``.

    No multipliers. A weight of two terms (a k=2 filter) takes two beats: the controller
    sends the second terms with ``first = 0``. Behaviour and handshake are those of
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
        shifted = act << code.exp
        return Mux(code.nonzero, Mux(code.sign, -shifted, shifted), 0)
