"""The baseline engine: one signed 8-bit multiply per weight."""

from __future__ import annotations

from amaranth.hdl import signed

from .common import AccumulatingEngine, register_engine

__all__ = ["Int8MacEngine"]


@register_engine
class Int8MacEngine(AccumulatingEngine):
    """int8 baseline engine: ``term = code * act`` with ``code`` a signed byte.

    Behaviour and handshake are those of
    :class:`~shiftpool.hw.engines.common.AccumulatingEngine`.

    Parameters
    ----------
    config : AcceleratorConfig
        With ``engine == "int8"``.

    Members
    -------
    i : In(stream.Signature(engine_input_layout(config)))
    o : Out(stream.Signature(engine_output_layout(config)))
    """

    engine = "int8"

    @classmethod
    def code_shape(cls, config):
        """``signed(8)``: the weight itself."""
        return signed(config.code_width)

    def term(self, code, act):
        return code * act
