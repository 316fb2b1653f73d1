"""The MLG in-situ engine: a MAC datapath over generated, full-width weights."""

from __future__ import annotations

from amaranth.hdl import signed

from .common import AccumulatingEngine, register_engine

__all__ = ["InSituEngine"]


@register_engine
class InSituEngine(AccumulatingEngine):
    """MLG engine: ``term = code * act`` with ``code`` a weight the generator
    (:class:`~shiftpool.hw.engines.generator.WeightGenerator`) expanded from the stored
    bases, ``mlg_w_width`` signed bits (``qu + qb + ceil(log2 Bi) + 1 + qv +
    ceil(log2 Bc)`` of the config's largest widths), never re-quantized. The products
    are multipliers (DSP blocks where the device has them, like the int8 engine's).

    Behaviour and handshake are those of
    :class:`~shiftpool.hw.engines.common.AccumulatingEngine`; the accumulator is sized
    by ``config.weight_log2 = mlg_w_width - 1``.

    Parameters
    ----------
    config : AcceleratorConfig
        With ``engine == "insitu"``.
    """

    engine = "insitu"

    @classmethod
    def code_shape(cls, config):
        """``signed(mlg_w_width)``: the generated weight itself."""
        return signed(config.code_width)

    def term(self, code, act):
        return code * act
