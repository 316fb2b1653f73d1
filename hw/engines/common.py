"""What every compute engine shares: its stream payloads, its signature, and the
accumulate / output-register / handshake logic.

An engine takes one beat per cycle: ``taps`` activations, shared by all lanes, and
``lanes x taps`` weight codes. Each lane adds ``sum_j term(codes[l][j], acts[j])`` to
its accumulator (restarting from zero on a beat with ``first``); on a beat with
``last`` the accumulators are presented on the output stream. The engines differ only
in :meth:`AccumulatingEngine.term`.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig

__all__ = [
    "AccumulatingEngine",
    "check_engine_config",
    "code_shape",
    "engine_input_layout",
    "engine_output_layout",
    "engine_signature",
    "make_engine",
]


def code_shape(config: AcceleratorConfig):
    """Shape of one weight code of ``config.engine``.

    ``"shiftadd"``: a struct, LSB first, ``exp`` (``exp_bits``), ``sign`` (1),
    ``nonzero`` (1); the packed integer is ``exp | sign << E | nonzero << (E + 1)`` and
    stands for ``0`` if not ``nonzero``, else ``(-1)**sign * 2**exp``.
    ``"int8"``: ``signed(8)``, the weight itself.
    Either way the width is ``config.code_width``.
    """
    if config.engine == "shiftadd":
        return data.StructLayout({"exp": unsigned(config.exp_bits), "sign": 1, "nonzero": 1})
    return signed(config.code_width)


def engine_input_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of an engine's input stream (one beat).

    For ``engine == "pool"`` it is :func:`~shiftpool.hw.engines.pool.pool_input_layout`;
    for the other engines:

    Members
    -------
    acts : ArrayLayout(unsigned(act_bits), taps)
        Activations, shared by every lane.
    codes : ArrayLayout(ArrayLayout(code_shape(config), taps), lanes)
        ``codes[l][j]`` multiplies ``acts[j]`` in lane ``l``.
    first : 1
        The beat starts a dot product: accumulate from zero.
    last : 1
        The beat ends a dot product: present the accumulators on the output.
    """
    if config.engine == "pool":
        from .pool import pool_input_layout

        return pool_input_layout(config)
    return data.StructLayout({
        "acts": data.ArrayLayout(unsigned(config.act_bits), config.taps),
        "codes": data.ArrayLayout(data.ArrayLayout(code_shape(config), config.taps),
                                  config.lanes),
        "first": 1,
        "last": 1,
    })


def engine_output_layout(config: AcceleratorConfig) -> data.ArrayLayout:
    """Payload of an engine's output stream: one signed ``acc_width`` sum per lane."""
    return data.ArrayLayout(signed(config.acc_width), config.lanes)


def engine_signature(config: AcceleratorConfig) -> wiring.Signature:
    """Signature of every engine.

    Members
    -------
    i : In(stream.Signature(engine_input_layout(config)))
        Beats of activations and codes.
    o : Out(stream.Signature(engine_output_layout(config)))
        One result per beat with ``last``: the dot products of all lanes.
    """
    return wiring.Signature({
        "i": In(stream.Signature(engine_input_layout(config))),
        "o": Out(stream.Signature(engine_output_layout(config))),
    })


def _adder_tree(values):
    """Sum of ``values`` as a balanced tree (log depth, exact widths)."""
    values = list(values)
    while len(values) > 1:
        pairs = [a + b for a, b in zip(values[0::2], values[1::2], strict=False)]
        values = pairs + values[len(pairs) * 2:]
    return values[0]


def check_engine_config(engine, config) -> None:
    """Refuse a ``config`` that is not an :class:`AcceleratorConfig` for the engine
    ``engine`` implements (its class attribute ``engine``)."""
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
    if config.engine != engine.engine:
        raise ValueError(f"{type(engine).__name__} implements engine {engine.engine!r}; "
                         f"config field 'engine' is {config.engine!r}")


class AccumulatingEngine(wiring.Component):
    """Base of the compute engines: accumulation, output register and handshake.

    Subclasses define :meth:`term`, the contribution of one code and one activation.

    Per accepted beat (``i.valid & i.ready``) lane ``l`` computes
    ``acc[l] = (0 if first else acc[l]) + sum_j term(codes[l][j], acts[j])``. A beat with
    ``last`` makes ``o.valid`` rise on the next cycle with ``o.payload[l] = acc[l]``; it is
    held until ``o.ready``. ``i.ready = ~o.valid | o.ready``: a beat is taken only while
    the output register is empty or being emptied in the same cycle, so no result is
    ever overwritten and none is lost. The result is exact as long as every
    accumulator value fits in ``signed(acc_width)``, which ``config.max_fan_in`` bounds.

    Parameters
    ----------
    config : AcceleratorConfig
        Sets the lane and tap counts and every width.

    Members
    -------
    i : In(stream.Signature(engine_input_layout(config)))
    o : Out(stream.Signature(engine_output_layout(config)))
    """

    #: The ``config.engine`` a subclass implements.
    engine: str | None = None

    def __init__(self, config: AcceleratorConfig):
        check_engine_config(self, config)
        self._config = config
        super().__init__(engine_signature(config))

    @property
    def config(self) -> AcceleratorConfig:
        """The configuration the engine was built for."""
        return self._config

    def term(self, code, act):
        """Value of ``code`` times ``act`` (an exact-width expression).

        Parameters
        ----------
        code : view or value of ``code_shape(config)``
        act : unsigned(act_bits) value
        """
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        config = self._config
        beat = self.i.payload

        # The accumulators double as the output register: while a result is held
        # (o.valid & ~o.ready) no beat is taken, so they cannot change under it.
        acc = Signal(engine_output_layout(config))
        m.d.comb += [
            self.o.payload.eq(acc),
            self.i.ready.eq(~self.o.valid | self.o.ready),
        ]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.If(self.i.valid & self.i.ready):
            for lane in range(config.lanes):
                codes = beat.codes[lane]
                partial = _adder_tree(self.term(codes[j], beat.acts[j])
                                      for j in range(config.taps))
                m.d.sync += acc[lane].eq(Mux(beat.first, 0, acc[lane]) + partial)
            with m.If(beat.last):
                m.d.sync += self.o.valid.eq(1)
        return m


def make_engine(config: AcceleratorConfig) -> wiring.Component:
    """The engine ``config.engine`` names: a :class:`ShiftAddEngine`, an
    :class:`Int8MacEngine` or a :class:`PoolLookupEngine` (which has a ``build`` stream
    besides ``i`` and ``o``)."""
    from .int8mac import Int8MacEngine
    from .pool import PoolLookupEngine
    from .shiftadd import ShiftAddEngine

    engines = {"shiftadd": ShiftAddEngine, "int8": Int8MacEngine, "pool": PoolLookupEngine}
    return engines[config.engine](config)
