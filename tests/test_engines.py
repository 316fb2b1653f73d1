# amaranth: UnusedElaboratable=no
"""The compute engines (``shiftpool.hw.engines``) against their golden model
(``shiftpool.sw.compile.engine_model``): random configurations, idle source, stalling sink."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.lib import data
from amaranth.sim import Simulator
from shiftpool.hw.config import ENGINES as CONFIG_ENGINES
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.engines.common import (
    ENGINE_CLASSES,
    engine_input_layout,
    make_engine,
    register_engine,
)
from shiftpool.hw.engines.int8mac import Int8MacEngine
from shiftpool.hw.engines.shiftadd import ShiftAddEngine
from shiftpool.hw.program import engine_stages
from shiftpool.sim.kit import stream_get, stream_monitor, stream_put, watchdog
from shiftpool.sw.compile.engine_model import (
    code_offset,
    code_value,
    engine_reference,
    pack_code,
)

ENGINES = ("shiftadd", "int8", "binary", "insitu")
CLOCK_PERIOD = 1e-6
MAX_PRODUCT_BEATS = 5


# -- stimulus ------------------------------------------------------------------------

def random_config(rng: np.random.Generator, engine: str) -> AcceleratorConfig:
    """A small random engine configuration whose ``max_fan_in`` covers the products
    :func:`random_beats` makes."""
    taps = int(rng.integers(1, 10))
    return AcceleratorConfig(
        engine=engine,
        lanes=int(rng.integers(1, 6)),
        taps=taps,
        act_bits=int(rng.integers(2, 9)),
        exp_bits=int(rng.integers(1, 5)),
        slot_bits=int(rng.integers(2, 17)),
        mlg_qb=int(rng.integers(2, 9)), mlg_qu=int(rng.integers(2, 9)),
        mlg_qv=int(rng.integers(2, 9)), mlg_bi=int(rng.integers(1, 9)),
        mlg_bc=int(rng.integers(1, 300)),
        max_fan_in=MAX_PRODUCT_BEATS * taps,
    )


def random_codes(rng: np.random.Generator, config: AcceleratorConfig, shape) -> np.ndarray:
    """Packed codes over the whole code space, with extra zeros and extreme weights."""
    codes = rng.integers(0, 1 << config.code_width, size=shape)
    pick = rng.random(size=shape)
    if config.engine == "binary":           # every slot is a weight; all-ones and zeros
        return np.where(pick < 0.2, (1 << config.code_width) - 1, np.where(pick > 0.85, 0,
                                                                            codes))
    if config.engine == "shiftadd":
        top = (1 << config.exp_bits) - 1
        extreme = pack_code(config, rng.choice([-1, 1], size=shape) << top)
    else:                                   # int8, insitu: the signed extremes
        top = (1 << (config.code_width - 1)) - 1
        extreme = pack_code(config, rng.choice([-top - 1, top], size=shape))
    codes = np.where(pick < 0.2, extreme, codes)
    return np.where(pick > 0.85, 0, codes)


def random_beats(rng: np.random.Generator, config: AcceleratorConfig, products: int) -> list:
    """``products`` dot products of 1..MAX_PRODUCT_BEATS beats each."""
    act_max = (1 << config.act_bits) - 1
    beats = []
    for _ in range(products):
        length = int(rng.integers(1, MAX_PRODUCT_BEATS + 1))
        for n in range(length):
            acts = rng.integers(0, act_max + 1, size=config.taps)
            acts = np.where(rng.random(config.taps) < 0.2, act_max, acts)
            codes = random_codes(rng, config, (config.lanes, config.taps))
            beat = (acts, codes, int(n == 0), int(n == length - 1))
            if config.engine == "binary":   # the round may change from beat to beat
                beat += (int(rng.integers(0, config.slot_bits)),)
            beats.append(beat)
    return beats


# -- harness -------------------------------------------------------------------------

def beat_payload(config: AcceleratorConfig, beat) -> data.Const:
    """The engine's input payload for a reference beat, packed bit by bit as
    ``engine_input_layout`` documents it (``codes[l][j]`` at flat index ``l*taps + j``)."""
    acts, codes, first, last = beat[:4]
    layout = engine_input_layout(config)
    raw = int(first) << layout["first"].offset | int(last) << layout["last"].offset
    if len(beat) > 4:
        raw |= int(beat[4]) << layout["round"].offset
    for j, act in enumerate(np.ravel(acts)):
        raw |= int(act) << (layout["acts"].offset + j * config.act_bits)
    for k, code in enumerate(np.ravel(codes)):
        raw |= int(code) << (layout["codes"].offset + k * config.code_width)
    return data.Const(layout, raw)


def lanes_of(payload, config: AcceleratorConfig) -> list:
    return [int(payload[lane]) for lane in range(config.lanes)]


def simulate(config: AcceleratorConfig, beats: list, seed: int, idle: float, stall: float,
             timeout: int = 10_000) -> list:
    """Results of the RTL engine fed ``beats`` by a source with idle cycles (probability
    ``idle`` per beat, repeated) into a sink with back-pressure (``stall``)."""
    dut = make_engine(config)
    expected_count = sum(beat[3] for beat in beats)
    results = []

    async def source(ctx):
        await stream_put(ctx, dut.i, (beat_payload(config, beat) for beat in beats),
                         np.random.default_rng([seed, 1]), idle)

    async def sink(ctx):
        words = await stream_get(ctx, dut.o, expected_count, np.random.default_rng([seed, 2]),
                                 stall)
        results.extend(lanes_of(payload, config) for payload in words)
        for _ in range(4):
            await ctx.tick()
            assert not ctx.get(dut.o.valid), f"seed {seed}: a result too many"

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.add_testbench(watchdog(timeout, lambda: f"(seed {seed}: {len(results)} of "
                                              f"{expected_count} results)"), background=True)
    sim.run()
    return results


def reference(config: AcceleratorConfig, beats: list) -> list:
    return [[int(v) for v in result] for result in engine_reference(config, beats)]


# -- tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", range(6))
def test_random_streams(engine, case):
    seed = 1000 * ENGINES.index(engine) + case
    rng = np.random.default_rng(seed)
    config = random_config(rng, engine)
    beats = random_beats(rng, config, products=int(rng.integers(8, 16)))
    idle, stall = rng.choice([0.0, 0.3, 0.7], size=2)
    got = simulate(config, beats, seed, idle, stall)
    assert got == reference(config, beats), f"seed {seed}, {config}, idle {idle}, stall {stall}"


@pytest.mark.parametrize("engine", ENGINES)
def test_output_held_under_back_pressure(engine):
    """A result appears ``stages + 1`` cycles after its last beat was taken; it stays on
    ``o`` unchanged while ``o.ready`` is low, and no beat is taken meanwhile (the whole
    engine is frozen); on the cycle it is emptied the next beat is taken, and that
    beat's result follows ``stages`` cycles later (at once when the engine has no
    stages)."""
    seed = 1234
    rng = np.random.default_rng(seed)
    config = AcceleratorConfig(engine=engine, lanes=3, taps=4, act_bits=6, exp_bits=3,
                               max_fan_in=16)
    a, d, b, c = (random_beats(rng, config, 1)[0] for _ in range(4))
    # a and d are one-beat products; b and c one two-beat product.
    a, d = (a[0], a[1], 1, 1, *a[4:]), (d[0], d[1], 1, 1, *d[4:])
    b, c = (b[0], b[1], 1, 0, *b[4:]), (c[0], c[1], 0, 1, *c[4:])
    expected = reference(config, [a, d, b, c])
    hold = 7
    dut = make_engine(config)
    stages = engine_stages(config)
    seen = []

    async def ticks_until_valid(ctx) -> int:
        n = 0
        while not ctx.get(dut.o.valid):
            assert n <= stages + 1, f"seed {seed}: no result {n} cycles on"
            await ctx.tick()
            n += 1
        return n

    async def bench(ctx):
        ctx.set(dut.i.payload, beat_payload(config, a))
        ctx.set(dut.i.valid, 1)
        assert ctx.get(dut.i.ready), f"seed {seed}: idle engine not ready"
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        assert await ticks_until_valid(ctx) == stages, f"seed {seed}: latency"
        ctx.set(dut.i.payload, beat_payload(config, d))
        ctx.set(dut.i.valid, 1)
        for _ in range(hold):
            assert ctx.get(dut.o.valid), f"seed {seed}: result not held"
            assert lanes_of(ctx.get(dut.o.payload), config) == expected[0], f"seed {seed}"
            assert not ctx.get(dut.i.ready), f"seed {seed}: beat taken under a held result"
            await ctx.tick()
        ctx.set(dut.o.ready, 1)
        assert ctx.get(dut.i.ready), f"seed {seed}: not ready while the output empties"
        await ctx.tick()
        seen.append(expected[0])
        # d went in on the same edge as a's result went out.
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.payload, beat_payload(config, b))
        ctx.set(dut.i.valid, stages == 0)       # a pipelined engine would take b now
        assert await ticks_until_valid(ctx) == stages, f"seed {seed}: back-to-back latency"
        assert lanes_of(ctx.get(dut.o.payload), config) == expected[1], f"seed {seed}"
        for _ in range(hold):
            await ctx.tick()
            assert lanes_of(ctx.get(dut.o.payload), config) == expected[1], f"seed {seed}"
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        seen.append(expected[1])
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.payload, beat_payload(config, c))
        assert not ctx.get(dut.o.valid), f"seed {seed}: b (not last) produced a result"
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        assert await ticks_until_valid(ctx) == stages, f"seed {seed}: c's result"
        assert lanes_of(ctx.get(dut.o.payload), config) == expected[2], f"seed {seed}"
        seen.append(expected[2])

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) == len(expected) == 3


def test_shift_add_and_binary_engines_are_pipelined():
    """The engines without multipliers register their terms and cut their adders into
    stages of two (``hw/program.engine_stages``); the multiplier engines add a beat in
    the cycle they take it."""
    stages = {taps: engine_stages(AcceleratorConfig(engine="shiftadd", lanes=2, taps=taps))
              for taps in (1, 2, 4, 8, 16)}
    # adders in series after the terms: ceil(log2 taps) tree levels + the accumulator's
    assert stages == {1: 1, 2: 1, 4: 2, 8: 2, 16: 3}
    assert engine_stages(AcceleratorConfig(engine="binary", lanes=2, taps=4)) == 2
    assert engine_stages(AcceleratorConfig(engine="int8", lanes=2, taps=4)) == 0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("sign", [-1, 1])
def test_acc_width_holds_largest_dot_product(engine, sign):
    """``max_fan_in`` largest activations times largest-magnitude weights (two terms of
    the largest exponent for shift-add, -128 or 127 for int8, the extremes of the
    generated width for insitu) do not wrap."""
    config = AcceleratorConfig(engine=engine, lanes=2, taps=3, act_bits=5, exp_bits=2,
                               max_fan_in=20)
    act_max = (1 << config.act_bits) - 1
    if engine == "shiftadd":
        term = sign << ((1 << config.exp_bits) - 1)
        passes, weight = 2, 2 * term
    elif engine == "binary":                # round 0: the slot's top bit is the sign
        term = (1 << (config.slot_bits - 1)) if sign < 0 else 0
        passes, weight = 1, sign
    else:                                   # int8 and insitu: the signed code's extremes
        top = 1 << (config.code_width - 1)
        weight = -top if sign < 0 else top - 1
        passes, term = 1, weight
    steps = -(-config.max_fan_in // config.taps)
    used = np.arange(steps * config.taps).reshape(steps, config.taps) < config.max_fan_in
    beats = []
    for p in range(passes):
        for n in range(steps):
            codes = np.where(used[n], pack_code(config, term), 0)
            beats.append((np.where(used[n], act_max, 0), np.tile(codes, (config.lanes, 1)),
                          int(p == 0 and n == 0), int(p == passes - 1 and n == steps - 1)))
    if engine == "binary":
        beats = [(*beat, 0) for beat in beats]
    exact = config.max_fan_in * act_max * weight
    # A one's complement term (shift-add) is one short per negative weight term.
    short = config.max_fan_in * passes if sign < 0 and engine == "shiftadd" else 0
    assert reference(config, beats) == [[exact - short] * config.lanes]
    # The value reaches into the top magnitude bits, so a narrower accumulator would wrap.
    assert abs(exact) >= 1 << (config.acc_width - 3)
    assert simulate(config, beats, seed=0, idle=0.0, stall=0.5) == \
        [[exact - short] * config.lanes]


# -- golden model and construction -----------------------------------------------------

def test_shiftadd_codes():
    config = AcceleratorConfig(engine="shiftadd", exp_bits=2)
    # exp | sign << 2 | nonzero << 3
    assert pack_code(config, 0) == 0
    assert pack_code(config, 1) == 0b1000
    assert pack_code(config, -1) == 0b1100
    assert pack_code(config, 8) == 0b1011
    assert pack_code(config, -4) == 0b1110
    values = [0, 1, -1, 2, -2, 4, -4, 8, -8]
    assert list(code_value(config, pack_code(config, values))) == values
    # Without the nonzero bit a code is zero whatever its other bits.
    assert list(code_value(config, [0b0111, 0b0101])) == [0, 0]
    for bad in (3, 16, -6):
        with pytest.raises(ValueError, match="shift-add terms"):
            pack_code(config, bad)
    with pytest.raises(ValueError, match="codes must be in"):
        code_value(config, 16)


def test_binary_codes_read_one_bit_per_round():
    config = AcceleratorConfig(engine="binary", slot_bits=4)
    slots = [0b1000, 0b0100, 0b1111, 0b0000, 0b0001]
    assert list(code_value(config, slots, 0)) == [-1, 1, -1, 1, 1]
    assert list(code_value(config, slots, 1)) == [1, -1, -1, 1, 1]
    assert list(code_value(config, slots, 3)) == [1, 1, -1, 1, -1]
    with pytest.raises(ValueError, match="round 4 must be in 0..3"):
        code_value(config, slots, 4)
    assert pack_code(config, 13) == 13
    with pytest.raises(ValueError, match="slots must be in 0..15"):
        pack_code(config, 16)


def test_int8_codes():
    config = AcceleratorConfig(engine="int8")
    assert pack_code(config, -1) == 0xFF
    assert pack_code(config, -128) == 0x80
    assert pack_code(config, 127) == 0x7F
    assert list(code_value(config, [0x80, 0xFF, 0x00, 0x7F])) == [-128, -1, 0, 127]
    for bad in (128, -129):
        with pytest.raises(ValueError, match="int8 weights"):
            pack_code(config, bad)


def test_engine_reference_by_hand():
    config = AcceleratorConfig(engine="shiftadd", lanes=2, taps=2, act_bits=4, exp_bits=2)

    def p(v):
        return pack_code(config, v)

    # Each negative code's term is a one's complement, one short of the product.
    beats = [
        ([3, 5], [[p(1), p(-2)], [p(0), p(8)]], 1, 0),     # [3 - 10 - 1, 40]
        ([1, 2], [[p(4), p(4)], [p(-1), p(0)]], 0, 1),     # [-8 + 12, 40 - 1 - 1]
        ([15, 0], [[p(-8), p(1)], [p(2), p(-2)]], 1, 1),   # [-120 - 1, 30 - 0 - 1]
    ]
    assert reference(config, beats) == [[4, 38], [-121, 29]]


def test_code_offsets_are_the_one_complement_terms():
    """The engine's terms fall short of the products exactly where its codes are
    negative shift-add codes (``nonzero`` and ``sign``); other engines negate exactly."""
    config = AcceleratorConfig(engine="shiftadd", exp_bits=2)
    assert list(code_offset(config, pack_code(config, [0, 1, -1, 8, -8]))) == [0, 0, 1, 0, 1]
    # a sign without nonzero is a zero code: no term, no offset
    assert code_offset(config, 0b0100) == 0
    binary = AcceleratorConfig(engine="binary", slot_bits=4)
    assert list(code_offset(binary, [0b1000, 0b0100, 0b0001])) == [0, 0, 0]
    assert code_offset(AcceleratorConfig(engine="int8"), 0xFF) == 0


def test_engine_reference_rejects_overflow():
    config = AcceleratorConfig(engine="int8", lanes=1, taps=1, act_bits=2, max_fan_in=1)
    beat = ([3], [[pack_code(config, -128)]], 0, 0)
    with pytest.raises(ValueError, match="overflows"):
        engine_reference(config, [beat] * (1 << config.acc_width))


def test_make_engine_and_signature():
    for engine, cls in (("shiftadd", ShiftAddEngine), ("int8", Int8MacEngine)):
        config = AcceleratorConfig(engine=engine, lanes=3, taps=5)
        dut = make_engine(config)
        assert type(dut) is cls
        Fragment.get(dut, platform=None)
        assert dut.i.payload.shape() == engine_input_layout(config)
        assert dut.o.payload.shape().size == config.lanes * config.acc_width
        assert engine_input_layout(config)["codes"].shape.size == (
            config.lanes * config.taps * config.code_width)
    # The rejected instance is never elaborated; line 1 silences Amaranth's warning on it.
    with pytest.raises(ValueError, match="engine"):
        ShiftAddEngine(AcceleratorConfig(engine="int8"))


def test_registry_has_one_class_per_engine():
    """Every engine of ``hw/config.py`` has exactly one registered gateware class; a
    second registration, or one for an undeclared engine, is refused."""
    assert sorted(ENGINE_CLASSES) == sorted(CONFIG_ENGINES)
    for name, cls in ENGINE_CLASSES.items():
        assert cls.engine == name
    with pytest.raises(ValueError, match="already registered"):
        register_engine(ShiftAddEngine)

    class Unknown(ShiftAddEngine):
        engine = "rbnn-not-yet"

    with pytest.raises(ValueError, match="not an engine"):
        register_engine(Unknown)


def test_engine_fields_hash_only_for_their_engine():
    """``exp_bits`` changes the shift-add engine's hash only, the pool fields the pool
    engine's only; the serialized form keeps its keys."""
    for engine in ("int8", "pool"):
        base = dict(engine=engine, taps=8)
        assert (AcceleratorConfig(**base, exp_bits=2).hash
                == AcceleratorConfig(**base, exp_bits=4).hash)
        assert "exp_bits" in AcceleratorConfig(**base).as_dict()
    assert AcceleratorConfig(exp_bits=2).hash != AcceleratorConfig(exp_bits=4).hash
    assert AcceleratorConfig(lut_bits=12).hash == AcceleratorConfig(lut_bits=14).hash
    pool = dict(engine="pool", taps=8)
    assert (AcceleratorConfig(**pool, lut_bits=12).hash
            != AcceleratorConfig(**pool, lut_bits=14).hash)
    for engine in CONFIG_ENGINES:
        config = AcceleratorConfig(engine=engine, taps=8)
        assert AcceleratorConfig.from_dict(config.as_dict()) == config


@pytest.mark.parametrize("engine", ENGINES)
def test_results_leave_stages_plus_one_cycles_after_their_last_beat(engine):
    """Timed by the kit's stream monitor on both streams, with a source that never
    idles and a sink that never stalls: every result moves exactly
    ``engine_stages + 1`` cycles after the beat with ``last`` moved (its cycle model:
    ``sw/compile/cycles.py``), and beats move every cycle."""
    rng = np.random.default_rng(77)
    config = random_config(rng, engine)
    beats = random_beats(rng, config, products=6)
    dut = make_engine(config)
    taken, given = [], []
    count = sum(beat[3] for beat in beats)

    async def source(ctx):
        await stream_put(ctx, dut.i, (beat_payload(config, beat) for beat in beats))

    async def sink(ctx):
        await stream_get(ctx, dut.o, count)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.add_testbench(stream_monitor(dut.i, taken), background=True)
    sim.add_testbench(stream_monitor(dut.o, given), background=True)
    sim.add_testbench(watchdog(1000), background=True)
    sim.run()
    assert [c for c, _ in taken] == list(range(taken[0][0], taken[0][0] + len(beats)))
    lasts = [c for (c, _), beat in zip(taken, beats, strict=True) if beat[3]]
    assert [c for c, _ in given] == [c + engine_stages(config) + 1 for c in lasts]
    assert [lanes_of(p, config) for _, p in given] == reference(config, beats)
