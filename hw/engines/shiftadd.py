"""The FLightNN shift-add engine: every product is one shift and a conditional negation."""

from __future__ import annotations

from amaranth.hdl import Mux

from .common import AccumulatingEngine

__all__ = ["ShiftAddEngine"]


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

    def term(self, code, act):
        shifted = act << code.exp
        return Mux(code.nonzero, Mux(code.sign, -shifted, shifted), 0)
