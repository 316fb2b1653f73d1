"""What every compute engine shares: its stream payloads, its signature, and the
accumulate / output-register / handshake logic.

An engine takes one beat per cycle: ``taps`` activations, shared by all lanes, and
``lanes x taps`` weight codes. Each lane adds ``sum_j term(codes[l][j], acts[j])`` to
its accumulator (restarting from zero on a beat with ``first``); on a beat with
``last`` the accumulators are presented on the output stream. The engines differ only
in :meth:`AccumulatingEngine.term`.

Engines are registered by name (:func:`register_engine`, one decorator per engine
class, whose module :mod:`shiftpool.hw.engines` imports); :func:`make_engine` and the
layout functions look the engine of ``config.engine`` up there, so this module imports
no engine.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import ENGINES, AcceleratorConfig, ConfigError
from ..program import ADDERS_PER_STAGE, engine_stages

__all__ = [
    "ENGINE_CLASSES",
    "AccumulatingEngine",
    "check_engine_config",
    "code_shape",
    "engine_class",
    "engine_input_layout",
    "engine_output_layout",
    "engine_signature",
    "make_engine",
    "register_engine",
]

#: The engine class of each ``config.engine`` name, filled by :func:`register_engine`.
ENGINE_CLASSES: dict[str, type] = {}


def register_engine(cls: type) -> type:
    """Class decorator: ``cls`` implements ``config.engine == cls.engine``.

    The name must be one of :data:`~shiftpool.hw.config.ENGINES` (where its config
    fields are declared) and not registered yet. The class must take the config as
    its one argument and have a classmethod ``input_layout(config)``.
    """
    name = getattr(cls, "engine", None)
    if name not in ENGINES:
        raise ValueError(f"{cls.__name__}.engine = {name!r} is not an engine of "
                         f"hw/config.py's ENGINE_FIELDS ({', '.join(ENGINES)})")
    if name in ENGINE_CLASSES:
        raise ValueError(f"engine {name!r} is already registered "
                         f"({ENGINE_CLASSES[name].__name__})")
    ENGINE_CLASSES[name] = cls
    return cls


def engine_class(config: AcceleratorConfig) -> type:
    """The registered class of ``config.engine``."""
    try:
        return ENGINE_CLASSES[config.engine]
    except KeyError:
        raise ConfigError(f"config field 'engine' = {config.engine!r} has no gateware; "
                          f"registered: {', '.join(sorted(ENGINE_CLASSES))}") from None


def code_shape(config: AcceleratorConfig):
    """Shape of one weight code of ``config.engine`` (width ``config.code_width``):
    the engine class's :meth:`~AccumulatingEngine.code_shape`."""
    return engine_class(config).code_shape(config)


def engine_input_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of the input stream (one beat) of ``config.engine``: the engine class's
    ``input_layout`` (:meth:`AccumulatingEngine.input_layout`,
    :func:`~shiftpool.hw.engines.pool.pool_input_layout`)."""
    return engine_class(config).input_layout(config)


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
        values = _tree_level(values)
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
    ``acc[l] = (0 if first else acc[l]) + sum_j term(codes[l][j], acts[j])``, after
    ``stages = engine_stages(config)`` register stages (``hw/program.py``): a beat
    with ``last`` makes ``o.valid`` rise ``stages + 1`` cycles after the beat was
    taken, with ``o.payload[l] = acc[l]``; it is held until ``o.ready``.
    ``i.ready = ~o.valid | o.ready``, and the stages move only then: while a result
    is held the whole engine is frozen (as the issue pipeline in front of it is), so
    no result is ever overwritten and none is lost, and the stages are exactly more
    pipeline registers in front of a one-cycle engine. The result is exact as long as
    every accumulator value fits in ``signed(acc_width)``, which ``config.max_fan_in``
    bounds.

    The stages (the engines of :data:`~shiftpool.hw.program.PIPELINED_ENGINES`): the
    terms are registered, then the adder tree and the accumulator's adder are cut into
    stages of :data:`~shiftpool.hw.program.ADDERS_PER_STAGE` adders in series. Engines
    whose terms are multiplications that map onto DSP blocks are not pipelined.

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

    @classmethod
    def code_shape(cls, config: AcceleratorConfig):
        """Shape of one weight code, ``config.code_width`` bits."""
        raise NotImplementedError

    @classmethod
    def input_layout(cls, config: AcceleratorConfig) -> data.StructLayout:
        """Payload of the input stream (one beat).

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
        return data.StructLayout({
            "acts": data.ArrayLayout(unsigned(config.act_bits), config.taps),
            "codes": data.ArrayLayout(data.ArrayLayout(cls.code_shape(config), config.taps),
                                      config.lanes),
            "first": 1,
            "last": 1,
        })

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
        # (o.valid & ~o.ready) nothing moves, so they cannot change under it.
        acc = Signal(engine_output_layout(config))
        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.o.payload.eq(acc),
            self.i.ready.eq(advance),
        ]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # Each stage: (valid, first, last, per lane the values still to be added).
        terms = [[self.term(beat.codes[lane][j], beat.acts[j]) for j in range(config.taps)]
                 for lane in range(config.lanes)]
        stage = (self.i.valid, beat.first, beat.last, terms)
        stages = engine_stages(config)
        if stages:
            stage = _register(m, advance, stage, "terms")
            # Adder levels left for the stages after the terms' register: the tree's,
            # then the accumulator's (in the last stage).
            for n in range(stages - 1):
                valid, first, last, values = stage
                for _ in range(ADDERS_PER_STAGE):
                    values = [_tree_level(lane) for lane in values]
                stage = _register(m, advance, (valid, first, last, values), f"sums{n}")
        valid, first, last, values = stage
        with m.If(advance & valid):
            for lane in range(config.lanes):
                m.d.sync += acc[lane].eq(Mux(first, 0, acc[lane]) + _adder_tree(values[lane]))
            with m.If(last):
                m.d.sync += self.o.valid.eq(1)
        return m


def _tree_level(values: list) -> list:
    """One level of the adder tree: neighbours added in pairs (an odd last one kept)."""
    pairs = [a + b for a, b in zip(values[0::2], values[1::2], strict=False)]
    return pairs + values[len(pairs) * 2:]


def _register(m: Module, advance, stage, name: str):
    """``stage`` (valid, first, last, per lane a list of values) through one register
    stage that moves on ``advance``."""
    valid, first, last, values = stage
    r_valid = Signal(name=f"{name}_valid")
    r_first = Signal(name=f"{name}_first")
    r_last = Signal(name=f"{name}_last")
    regs = [[Signal(v.shape(), name=f"{name}_{lane}_{j}") for j, v in enumerate(lane_values)]
            for lane, lane_values in enumerate(values)]
    with m.If(advance):
        m.d.sync += [r_valid.eq(valid), r_first.eq(first), r_last.eq(last)]
        m.d.sync += [r.eq(v) for lane_regs, lane_values in zip(regs, values, strict=True)
                     for r, v in zip(lane_regs, lane_values, strict=True)]
    return r_valid, r_first, r_last, regs


def make_engine(config: AcceleratorConfig) -> wiring.Component:
    """The engine ``config.engine`` names (its registered class; the pool engine has a
    ``build`` stream besides ``i`` and ``o``)."""
    return engine_class(config)(config)
