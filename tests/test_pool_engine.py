# amaranth: UnusedElaboratable=no
"""The bit-serial weight-pool lookup engine (``shiftpool.hw.engines.pool``) against the
pool golden model (``shiftpool.sw.schemes.pool_golden``): table built through the build
port, random beats of both paths and of precompute mode (fill and gather beats, shaped
as the controller issues them), idle source, stalling sink, and its timing contract."""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment
from amaranth.sim import Simulator
from shiftpool.boards.tools import run_tool
from shiftpool.hw.config import POOL_GROUP, AcceleratorConfig
from shiftpool.hw.engines.common import engine_input_layout, make_engine
from shiftpool.hw.engines.pool import (
    PoolLookupEngine,
    pool_build_layout,
    pool_input_layout,
    pool_shift_bits,
    precompute_shape,
)
from shiftpool.hw.memories import DROP_INIT, spram_blocks
from shiftpool.hw.program import addr_width, count_width
from shiftpool.sw.schemes.pool_golden import build_lut, lut_dot, narrow_lut, table

CLOCK_PERIOD = 1e-6
MAX_GROUP_BEATS = 4
POOL_SIZES = (2, 4, 8, 16, 32)
#: Precompute configs: most steps of a layer; a lane group has 1 or 2 passes of them.
MAX_STEPS = 6


# -- stimulus ------------------------------------------------------------------------

def random_config(rng: np.random.Generator, pool_table: str = "full") -> AcceleratorConfig:
    """A small random pool engine whose ``max_fan_in`` covers :func:`random_beats`."""
    return AcceleratorConfig(
        engine="pool", pool_table=pool_table,
        lanes=int(rng.integers(1, 5)),
        act_bits=int(rng.integers(2, 9)),
        pool_size=int(rng.choice(POOL_SIZES)),
        pool_bits=int(rng.integers(2, 9)),
        lut_bits=int(rng.integers(2, 17)),
        max_fan_in=POOL_GROUP * MAX_GROUP_BEATS,
    )


def random_pool(rng: np.random.Generator, config: AcceleratorConfig) -> np.ndarray:
    """``[S, 8]`` symmetric ``pool_bits`` values, a fifth of them extreme."""
    top = (1 << (config.pool_bits - 1)) - 1
    pool = rng.integers(-top, top + 1, size=(config.pool_size, POOL_GROUP))
    extreme = rng.choice([-top, top], size=pool.shape)
    return np.where(rng.random(pool.shape) < 0.2, extreme, pool)


def random_precompute_config(rng: np.random.Generator, pool_size: int,
                             pool_table: str = "full") -> AcceleratorConfig:
    """A small random pool engine with a precompute store (``lanes`` a power of two)."""
    return AcceleratorConfig(
        engine="pool", pool_table=pool_table,
        lanes=int(rng.choice([lanes for lanes in (1, 2, 4) if lanes <= pool_size])),
        act_bits=int(rng.integers(2, 9)),
        pool_size=pool_size,
        pool_bits=int(rng.integers(2, 9)),
        lut_bits=int(rng.integers(2, 17)),
        precompute_steps=int(rng.integers(1, MAX_STEPS + 1)),
        max_fan_in=POOL_GROUP * max(MAX_GROUP_BEATS, 2 * MAX_STEPS),
    )


def random_acts(rng: np.random.Generator, config: AcceleratorConfig) -> np.ndarray:
    """One group of activations, a fifth of them all ones."""
    act_max = (1 << config.act_bits) - 1
    acts = rng.integers(0, act_max + 1, size=POOL_GROUP)
    return np.where(rng.random(POOL_GROUP) < 0.2, act_max, acts)


def random_beat(rng: np.random.Generator, config: AcceleratorConfig, **fields) -> dict:
    """A beat of random path, activations, weights, indices and lowest plane, with
    ``fields`` overriding them."""
    acts = random_acts(rng, config)
    weights = rng.integers(-128, 128, size=(config.lanes, POOL_GROUP))
    weights = np.where(rng.random(weights.shape) < 0.2,
                       rng.choice([-128, 127], size=weights.shape), weights)
    beat = {
        "acts": acts,
        "weights": weights,
        "index": rng.integers(0, config.pool_size, size=config.lanes),
        "lookup": int(rng.random() < 0.6),
        "plane_lo": int(rng.integers(0, config.act_bits)),
        "first": 0,
        "last": 0,
    }
    beat.update(fields)
    return beat


def random_beats(rng: np.random.Generator, config: AcceleratorConfig, groups: int) -> list:
    """``groups`` dot products of 1..MAX_GROUP_BEATS beats; every beat picks its path
    and its lowest plane at random."""
    beats = []
    for _ in range(groups):
        length = int(rng.integers(1, MAX_GROUP_BEATS + 1))
        beats += [random_beat(rng, config, first=int(n == 0), last=int(n == length - 1))
                  for n in range(length)]
    return beats


def precompute_beats(rng: np.random.Generator, config: AcceleratorConfig, positions: int,
                     steps: int, plane_lo: int, max_groups: int = 3) -> list:
    """A precompute layer's beats for ``positions`` output positions, as the controller
    issues them: per position ``fill_rows * steps`` fill beats (fill row outer, step
    inner; their ``first``, ``last`` and indices are noise), then ``1 .. max_groups``
    lane groups (none if 0) of one or two passes of gather beats over the steps (random
    indices; the position's activations, which a gather beat does not read)."""
    beats = []
    for _ in range(positions):
        acts = [random_acts(rng, config) for _ in range(steps)]
        beats += [random_beat(rng, config, acts=acts[s], lookup=1, plane_lo=plane_lo,
                              first=int(rng.integers(2)), last=int(rng.integers(2)),
                              fill=1, step=s, fill_row=k)
                  for k in range(config.fill_rows) for s in range(steps)]
        for _ in range(int(rng.integers(1, max_groups + 1)) if max_groups else 0):
            length = steps * int(rng.integers(1, 3))
            beats += [random_beat(rng, config, acts=acts[n % steps], lookup=1,
                                  plane_lo=plane_lo, first=int(n == 0),
                                  last=int(n == length - 1), gather=1, step=n % steps)
                      for n in range(length)]
    return beats


def table_shift(config: AcceleratorConfig, pool: np.ndarray) -> int:
    return table(pool, config.lut_bits, config.pool_table)[1]


def engine_table(config: AcceleratorConfig, pool: np.ndarray) -> np.ndarray:
    """The golden model's 256-row table for the engine's organisation."""
    return table(pool, config.lut_bits, config.pool_table)[0]


# -- reference -----------------------------------------------------------------------

def beat_reference(config: AcceleratorConfig, beat: dict, lut: np.ndarray) -> np.ndarray:
    """Lane values of one beat: ``lut_dot`` for the lookup path (``mode="precompute"``
    for a gather beat: the layer's precision, the position's activations of the step),
    a plain dot product with the dropped planes masked off for the int8 path."""
    bits = config.act_bits - beat["plane_lo"]
    acts = np.asarray(beat["acts"], dtype=np.int64)
    if beat["lookup"]:
        mode = "precompute" if beat.get("gather") else "direct"
        return lut_dot(acts[None, :], np.asarray(beat["index"])[:, None], lut,
                       config.act_bits, bits, mode=mode)[0]
    kept = acts & -(1 << beat["plane_lo"])
    return np.asarray(beat["weights"], dtype=np.int64) @ kept


def reference(config: AcceleratorConfig, steps: list) -> list:
    """Results of ``steps``: ``("build", (pool, rows))`` makes the table that of
    ``pool`` (``rows``, the vectors sent, are the ones that changed), ``("beat", beat)``
    accumulates (a fill beat does not)."""
    lut = None
    acc = np.zeros(config.lanes, dtype=np.int64)
    results = []
    for kind, item in steps:
        if kind == "build":
            lut = engine_table(config, item[0])
            continue
        if item.get("fill"):
            continue
        acc = (0 if item["first"] else acc) + beat_reference(config, item, lut)
        if item["last"]:
            results.append([int(v) for v in acc])
    return results


# -- harness -------------------------------------------------------------------------

def beat_payload(config: AcceleratorConfig, beat: dict):
    fields = {
        "acts": [int(a) for a in beat["acts"]],
        "weights": [[int(w) for w in row] for row in beat["weights"]],
        "index": [int(i) for i in beat["index"]],
        "lookup": beat["lookup"],
        "plane_lo": beat["plane_lo"],
        "first": beat["first"],
        "last": beat["last"],
    }
    if config.precompute:
        fields.update({name: beat.get(name, 0)
                       for name in ("fill", "gather", "step", "fill_row")})
    return pool_input_layout(config).const(fields)


def build_payloads(config: AcceleratorConfig, pool: np.ndarray, order) -> list:
    shift = table_shift(config, pool)
    layout = pool_build_layout(config)
    return [layout.const({"index": int(p), "values": [int(v) for v in pool[p]],
                          "shift": shift}) for p in order]


def lanes_of(payload, config: AcceleratorConfig) -> list:
    return [int(payload[lane]) for lane in range(config.lanes)]


def simulate(config: AcceleratorConfig, steps: list, seed: int, idle: float, stall: float,
             timeout: int = 60_000) -> list:
    """Results of the RTL engine fed ``steps`` (the ``rows`` of a build's pool in a
    random order on ``build``, beats on ``i``, one after the other from one source with
    idle cycles of probability ``idle``) into a sink with back-pressure ``stall``. A
    monitor checks the timing contract's points 2 and 3 and that a held result does not
    change."""
    dut = PoolLookupEngine(config)
    expected_count = sum(item["last"] and not item.get("fill")
                         for kind, item in steps if kind == "beat")
    beats = [item for kind, item in steps if kind == "beat"]
    results = []

    async def source(ctx):
        rng = np.random.default_rng([seed, 1])

        async def gap():
            while rng.random() < idle:
                # The payload of an idle stream is not looked at.
                ctx.set(dut.i.payload, beat_payload(config, beats[rng.integers(len(beats))]))
                await ctx.tick()

        for kind, item in steps:
            if kind == "build":
                pool, rows = item
                for payload in build_payloads(config, pool, rng.permutation(rows)):
                    await gap()
                    ctx.set(dut.build.payload, payload)
                    ctx.set(dut.build.valid, 1)
                    await ctx.tick().until(dut.build.ready)
                    ctx.set(dut.build.valid, 0)
            else:
                await gap()
                ctx.set(dut.i.payload, beat_payload(config, item))
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        # o.ready is random in every cycle, so results also wait while they are held.
        rng = np.random.default_rng([seed, 2])
        while len(results) < expected_count:
            ctx.set(dut.o.ready, int(rng.random() >= stall))
            _, _, taken, payload = await ctx.tick().sample(dut.o.valid & dut.o.ready,
                                                           dut.o.payload)
            if taken:
                results.append(lanes_of(payload, config))
        ctx.set(dut.o.ready, 1)
        for _ in range(4):
            await ctx.tick()
            assert not ctx.get(dut.o.valid), f"seed {seed}: a result too many"

    async def monitor(ctx):
        pending = 0            # results accepted (a beat with last) and not yet taken
        due = {}               # cycle -> what o.valid must be then
        held = None
        cycle = 0
        # A fill beat's last is noise: it produces no result.
        result_beat = dut.i.payload.last
        if config.precompute:
            result_beat = result_beat & ~dut.i.payload.fill
        async for _, _, i_take, last, o_valid, o_ready, out in ctx.tick().sample(
                dut.i.valid & dut.i.ready, result_beat, dut.o.valid, dut.o.ready,
                dut.o.payload):
            if cycle in due:
                assert o_valid == due.pop(cycle), (
                    f"seed {seed}: o.valid is {o_valid} in cycle {cycle}, not "
                    f"{1 - o_valid} (a result is presented 2 cycles after its last beat)")
            if held is not None:
                assert o_valid and lanes_of(out, config) == held, (
                    f"seed {seed}: result changed or dropped while held (cycle {cycle})")
            taken = o_valid and o_ready
            if i_take and last:
                assert pending - taken == 0, (
                    f"seed {seed}: a beat with last accepted in cycle {cycle} while a "
                    f"result is pending")
                pending += 1
                due[cycle + 1], due[cycle + 2] = 0, 1
            pending -= taken
            held = lanes_of(out, config) if o_valid and not o_ready else None
            cycle += 1

    async def watchdog(ctx):
        for _ in range(timeout):
            await ctx.tick()
        raise AssertionError(f"seed {seed}: timeout, {len(results)} of {expected_count} "
                             f"results after {timeout} cycles")

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(watchdog, background=True)
    sim.run()
    return results


# -- tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_random_streams(seed):
    """Table built on chip, then beats; then a few pool vectors rebuilt (at a random
    point, possibly inside a dot product) and more beats. Odd seeds: half tables."""
    rng = np.random.default_rng(seed)
    config = random_config(rng, pool_table=("full", "half")[seed % 2])
    pool = random_pool(rng, config)
    beats = random_beats(rng, config, groups=int(rng.integers(8, 16)))
    cut = int(rng.integers(0, len(beats) + 1))
    rebuilt = pool.copy()
    changed = rng.choice(config.pool_size, size=min(2, config.pool_size), replace=False)
    rebuilt[changed] = random_pool(rng, config)[changed]
    if table_shift(config, rebuilt) != table_shift(config, pool):
        # A table has one shift: rebuild every vector when it changes.
        changed = np.arange(config.pool_size)
    idle, stall = rng.choice([0.0, 0.3, 0.7], size=2)
    steps = ([("build", (pool, np.arange(config.pool_size)))] +
             [("beat", b) for b in beats[:cut]] +
             [("build", (rebuilt, changed))] +
             [("beat", b) for b in beats[cut:]])
    got = simulate(config, steps, seed, idle, stall)
    assert got == reference(config, steps), (
        f"seed {seed}, {config}, idle {idle}, stall {stall}")


@pytest.mark.parametrize("seed", range(100, 110))
def test_random_precompute_streams(seed):
    """Precompute layers (per position: fill beats, then lane groups of gather beats)
    of random steps and precision, direct lookup and int8 groups between them, and a few
    pool vectors rebuilt between two of these segments."""
    rng = np.random.default_rng(seed)
    config = random_precompute_config(rng, POOL_SIZES[seed % len(POOL_SIZES)],
                                      pool_table=("full", "half")[seed % 2])
    pool = random_pool(rng, config)

    def layer():
        return precompute_beats(rng, config, positions=int(rng.integers(1, 3)),
                                steps=int(rng.integers(1, config.precompute_steps + 1)),
                                plane_lo=int(rng.integers(0, config.act_bits)))

    segments = [layer(), random_beats(rng, config, groups=int(rng.integers(1, 4))), layer()]
    if rng.random() < 0.5:
        segments += [random_beats(rng, config, groups=2), layer()]
    cut = int(rng.integers(1, len(segments)))
    rebuilt = pool.copy()
    changed = rng.choice(config.pool_size, size=min(2, config.pool_size), replace=False)
    rebuilt[changed] = random_pool(rng, config)[changed]
    if table_shift(config, rebuilt) != table_shift(config, pool):
        changed = np.arange(config.pool_size)
    idle, stall = rng.choice([0.0, 0.3, 0.7], size=2)
    steps = ([("build", (pool, np.arange(config.pool_size)))] +
             [("beat", b) for segment in segments[:cut] for b in segment] +
             [("build", (rebuilt, changed))] +
             [("beat", b) for segment in segments[cut:] for b in segment])
    got = simulate(config, steps, seed, idle, stall)
    assert got == reference(config, steps), (
        f"seed {seed}, {config}, idle {idle}, stall {stall}")


@pytest.mark.parametrize("pool_table", ["full", "half"])
@pytest.mark.parametrize("sign", [-1, 1])
def test_extreme_values_do_not_overflow(sign, pool_table):
    """Largest-magnitude pool values of either sign (16-bit pool, 16-bit entries, so the
    table is narrowed; half tables: entries of 17 bits, the sum of two halves),
    all-ones activations, int8 weights -128 and 127, and ``max_fan_in`` inputs per dot
    product: every sum is exact."""
    config = AcceleratorConfig(engine="pool", lanes=3, act_bits=8, pool_size=4,
                               pool_bits=16, lut_bits=16, max_fan_in=32, pool_table=pool_table)
    top = (1 << (config.pool_bits - 1)) - 1
    pool = np.zeros((config.pool_size, POOL_GROUP), dtype=np.int64)
    pool[0], pool[1] = sign * top, -sign * top
    pool[2, ::2], pool[2, 1::2] = top, -top
    act_max = (1 << config.act_bits) - 1
    beats = config.max_fan_in // POOL_GROUP
    weights = np.array([[-128] * 8, [127] * 8, [-128, 127] * 4])

    def group(lookup):
        return [{"acts": np.full(POOL_GROUP, act_max), "weights": weights,
                 "index": np.array([0, 1, 2]), "lookup": lookup, "plane_lo": 0,
                 "first": int(n == 0), "last": int(n == beats - 1)} for n in range(beats)]

    steps = ([("build", (pool, np.arange(config.pool_size)))] +
             [("beat", b) for b in group(1) + group(0)])
    expected = reference(config, steps)
    lut = engine_table(config, pool)
    entry = int(lut[255, 0])
    width = config.lut_bits + (pool_table == "half")       # a half entry sums two words
    assert abs(entry) >= 1 << (width - 2)                   # the entries' range is used
    assert expected[0][:2] == [beats * act_max * entry, -beats * act_max * entry]
    assert expected[1][:2] == [beats * act_max * 8 * -128, beats * act_max * 8 * 127]
    # One beat's bit-serial sum reaches the top of a signed(width + act_bits) word.
    assert abs(act_max * entry) >= 1 << (width + config.act_bits - 2)
    for seed, (idle, stall) in enumerate([(0.0, 0.0), (0.5, 0.5)]):
        assert simulate(config, steps, seed, idle, stall) == expected, f"seed {seed}"


@pytest.mark.parametrize("pool_table", ["full", "half"])
@pytest.mark.parametrize("pool_bits, lut_bits", [(16, 16), (4, 16)])
def test_precompute_extreme_values(pool_bits, lut_bits, pool_table):
    """Precomputed values at the bound of ``precompute_shape``: the extreme entries of
    a narrowed 16-bit table (``-2**15``, ``2**15 - 1``), or of an exact table of a
    4-bit pool (``8 * -8 = -2**6``, ``8 * 7``), times all-ones 8-bit activations, and
    ``max_fan_in`` inputs per dot product."""
    config = AcceleratorConfig(engine="pool", lanes=2, act_bits=8, pool_size=4,
                               pool_bits=pool_bits, lut_bits=lut_bits, max_fan_in=32,
                               precompute_steps=4, pool_table=pool_table)
    top = 1 << (config.pool_bits - 1)
    pool = np.zeros((config.pool_size, POOL_GROUP), dtype=np.int64)
    pool[0], pool[1] = -top, top - 1
    pool[2, ::2], pool[2, 1::2] = top - 1, -top
    steps_ = config.precompute_steps
    act_max = (1 << config.act_bits) - 1
    rng = np.random.default_rng(5)
    beats = precompute_beats(rng, config, positions=1, steps=steps_, plane_lo=0,
                             max_groups=0)
    for b in beats:
        b["acts"] = np.full(POOL_GROUP, act_max)
    for index in ([0, 1], [1, 0], [2, 3]):
        beats += [random_beat(rng, config, acts=np.full(POOL_GROUP, act_max), lookup=1,
                              plane_lo=0, index=np.array(index), first=int(n == 0),
                              last=int(n == steps_ - 1), gather=1, step=n)
                  for n in range(steps_)]
    steps = [("build", (pool, np.arange(config.pool_size)))] + [("beat", b) for b in beats]
    expected = reference(config, steps)
    lut = engine_table(config, pool)
    low, high = int(lut[255, 0]), int(lut[255, 1])
    width = precompute_shape(config).width
    assert low == -(1 << (width - config.act_bits - 1))     # the most negative entry
    # R = act_max * low would not fit one bit fewer.
    assert act_max * low < -(1 << (width - 2))
    assert expected[0] == [steps_ * act_max * low, steps_ * act_max * high]
    assert expected[1] == [steps_ * act_max * high, steps_ * act_max * low]
    for seed, (idle, stall) in enumerate([(0.0, 0.0), (0.5, 0.5)]):
        assert simulate(config, steps, seed, idle, stall) == expected, f"seed {seed}"


def _offer(ctx, dut, config, beat):
    ctx.set(dut.i.payload, beat_payload(config, beat))
    ctx.set(dut.i.valid, 1)


@pytest.mark.parametrize("precompute_steps", [0, 3])
def test_timing_contract(precompute_steps):
    """No stalls: a beat of P planes offered in cycle t0 is accepted in t0 + P - 1,
    back-to-back beats leave no bubble, a result is on ``o`` 2 cycles after its last
    beat, and the next beat with ``last`` is accepted the cycle the result is taken;
    the same with a precompute store (beats neither fill nor gather)."""
    config = AcceleratorConfig(engine="pool", lanes=2, act_bits=8, pool_size=4,
                               pool_bits=8, lut_bits=16, max_fan_in=64,
                               precompute_steps=precompute_steps)
    rng = np.random.default_rng(7)
    pool = random_pool(rng, config)
    dut = PoolLookupEngine(config)
    log = {"accepted": [], "valid": []}

    def beat(plane_lo, first, last):
        b = random_beats(rng, config, 1)[0]
        b.update(plane_lo=plane_lo, first=first, last=last)
        return b

    # One group of four beats (P = 8, 1, 3, 5), then single-beat groups with P = 1, 1, 2.
    group = [beat(0, 1, 0), beat(7, 0, 0), beat(5, 0, 0), beat(3, 0, 1)]
    singles = [beat(7, 1, 1), beat(7, 1, 1), beat(6, 1, 1)]
    steps = ([("build", (pool, np.arange(config.pool_size)))] +
             [("beat", b) for b in group + singles])
    expected = reference(config, steps)

    async def bench(ctx):
        for payload in build_payloads(config, pool, range(config.pool_size)):
            ctx.set(dut.build.payload, payload)
            ctx.set(dut.build.valid, 1)
            await ctx.tick().until(dut.build.ready)
        ctx.set(dut.build.valid, 0)
        await ctx.tick().until(dut.build.ready)      # the last vector is written
        ctx.set(dut.o.ready, 1)
        cycle = 0
        results = []
        for b in group + singles:
            _offer(ctx, dut, config, b)
            while not ctx.get(dut.i.ready):
                assert cycle < 100, "beat never accepted"
                if ctx.get(dut.o.valid):
                    results.append((cycle, lanes_of(ctx.get(dut.o.payload), config)))
                await ctx.tick()
                cycle += 1
            log["accepted"].append(cycle)
            if ctx.get(dut.o.valid):
                results.append((cycle, lanes_of(ctx.get(dut.o.payload), config)))
            await ctx.tick()
            cycle += 1
        ctx.set(dut.i.valid, 0)
        for _ in range(4):
            if ctx.get(dut.o.valid):
                results.append((cycle, lanes_of(ctx.get(dut.o.payload), config)))
            await ctx.tick()
            cycle += 1
        log["valid"] = results

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    # Group beats from cycle 0: P = 8, 1, 3, 5 back to back.
    group_accepts = [7, 8, 11, 16]
    # Its result is on o in 18 only (taken at once); the first single (P = 1) is offered
    # in 17, waits for that result to be taken and goes in the same cycle, 18; the next
    # in 20, the next (P = 2) in 21 + 1 = 22.
    single_accepts = [18, 20, 22]
    assert log["accepted"] == group_accepts + single_accepts
    assert log["valid"] == [(t + 2, value) for t, value in
                            zip([16] + single_accepts, expected, strict=True)]


def run_timed(config: AcceleratorConfig, pool: np.ndarray, beats: list,
              ready=lambda cycle: True, limit: int = 1000) -> dict:
    """Build the table of ``pool``, then offer ``beats`` back to back from cycle 0 with
    ``o.ready = ready(cycle)``; log each beat's acceptance cycle and each result as
    ``(first cycle on o, cycle taken, lanes)``."""
    dut = PoolLookupEngine(config)
    log = {"accepted": [], "results": []}
    expected_count = sum(b["last"] and not b.get("fill") for b in beats)

    async def bench(ctx):
        for payload in build_payloads(config, pool, range(config.pool_size)):
            ctx.set(dut.build.payload, payload)
            ctx.set(dut.build.valid, 1)
            await ctx.tick().until(dut.build.ready)
        ctx.set(dut.build.valid, 0)
        await ctx.tick().until(dut.build.ready)      # the last vector is written
        waiting, shown = list(beats), None
        for cycle in range(limit):
            if waiting:
                ctx.set(dut.i.payload, beat_payload(config, waiting[0]))
            ctx.set(dut.i.valid, bool(waiting))
            ctx.set(dut.o.ready, ready(cycle))
            if waiting and ctx.get(dut.i.ready):
                log["accepted"].append(cycle)
                waiting.pop(0)
            if ctx.get(dut.o.valid):
                shown = cycle if shown is None else shown
                if ctx.get(dut.o.ready):
                    log["results"].append(
                        (shown, cycle, lanes_of(ctx.get(dut.o.payload), config)))
                    shown = None
            if not waiting and len(log["results"]) == expected_count:
                return
            await ctx.tick()
        raise AssertionError(f"timeout: {log}")

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    return log


def gather_group(rng, config, acts, plane_lo, indices) -> list:
    """One lane group of gather beats, step ``s`` reading ``indices[s]``."""
    return [random_beat(rng, config, acts=acts[s], lookup=1, plane_lo=plane_lo,
                        index=np.array(index), first=int(s == 0),
                        last=int(s == len(indices) - 1), gather=1, step=s)
            for s, index in enumerate(indices)]


def test_precompute_timing():
    """Fill beats take ``P`` cycles each and wait for no result; gather beats take one
    cycle whatever ``plane_lo`` is, their results are on ``o`` 2 cycles after the last
    one, a gather beat's commit waits under a held result like any accumulating beat's,
    and a gather beat right after the last fill beat reads the row it is writing."""
    config = AcceleratorConfig(engine="pool", lanes=2, act_bits=8, pool_size=4,
                               pool_bits=8, lut_bits=16, max_fan_in=64, precompute_steps=2)
    rng = np.random.default_rng(9)
    pool = random_pool(rng, config)
    acts = [[random_acts(rng, config) for _ in range(2)] for _ in range(3)]

    def fills(position, steps, plane_lo):
        return [random_beat(rng, config, acts=acts[position][s], lookup=1, first=1, last=1,
                            plane_lo=plane_lo, fill=1, step=s, fill_row=k)
                for k in range(config.fill_rows) for s in range(steps)]

    # Positions A and B: 2 steps, P = 3; position C: 1 step, P = 8, its first gather
    # group reads fill row 1 (vectors 2 and 3) in the cycle the last fill beat writes it.
    beats = (fills(0, 2, 5) + gather_group(rng, config, acts[0], 5, [[0, 3], [2, 1]]) +
             fills(1, 2, 5) + gather_group(rng, config, acts[1], 5, [[1, 1], [3, 0]]) +
             fills(2, 1, 0) + gather_group(rng, config, acts[2], 0, [[3, 2]]) +
             gather_group(rng, config, acts[2], 0, [[1, 0]]))
    log = run_timed(config, pool, beats, ready=lambda cycle: cycle >= 30)
    expected = reference(config, [("build", (pool, range(4)))] + [("beat", b) for b in beats])
    # A: fills from cycle 0 at 2, 5, 8, 11, gathers 12, 13 (result on o from 15, held
    # until 30). B: fills 16 .. 25 under the held result; its first gather goes in 26 and
    # commits in 30, its last is accepted in 30 as A's result is taken. C: fills from 31
    # (P = 8) at 38, 46; a gather in 47; the next waits for that result, taken in 49.
    assert log["accepted"] == [2, 5, 8, 11, 12, 13, 16, 19, 22, 25, 26, 30, 38, 46, 47, 49]
    assert log["results"] == [(shown, taken, value) for (shown, taken), value in
                              zip([(15, 30), (32, 32), (49, 49), (51, 51)], expected,
                                  strict=True)]


def test_gather_reads_row_being_written():
    """One step (the case of the read during the write): at every position each lane's
    first gather reads the store row the last fill beat writes in that very cycle, and
    a stale row (the previous position's) would give another result."""
    config = AcceleratorConfig(engine="pool", lanes=4, act_bits=4, pool_size=8,
                               pool_bits=6, lut_bits=10, max_fan_in=16, precompute_steps=1)
    rng = np.random.default_rng(13)
    pool = random_pool(rng, config)
    lut = narrow_lut(build_lut(pool), table_shift(config, pool))
    beats, stale = [], []
    previous = None
    for _ in range(4):
        acts = random_acts(rng, config)
        for k in range(config.fill_rows):
            beats.append(random_beat(rng, config, acts=acts, lookup=1, plane_lo=1,
                                     fill=1, step=0, fill_row=k))
        index = rng.permutation(np.arange(4, 8))      # all in row 1, the last one filled
        beats += gather_group(rng, config, [acts], 1, [index])
        if previous is not None:
            stale.append(lut_dot(previous[None], index[:, None], lut, config.act_bits, 3)[0])
        previous = acts
    log = run_timed(config, pool, beats)
    expected = reference(config, [("build", (pool, range(8)))] + [("beat", b) for b in beats])
    gathers = [n for n, b in enumerate(beats) if b.get("gather")]
    assert all(log["accepted"][n] == log["accepted"][n - 1] + 1 for n in gathers)
    assert [value for _, _, value in log["results"]] == expected
    assert all(list(s) != e for s, e in zip(stale, expected[1:], strict=True))


@pytest.mark.parametrize("pool_table, table_rows", [("full", 256), ("half", 16)])
def test_build_waits_for_beats_in_flight(pool_table, table_rows):
    """A pool vector offered while a beat is being processed is taken once that beat
    has read all its planes (it sees the old table); a beat offered meanwhile waits for
    the build (and sees the new table). A build writes one row of each table per cycle:
    256 cycles for a full table, 16 for half tables (both halves side by side)."""
    config = AcceleratorConfig(engine="pool", lanes=2, act_bits=8, pool_size=2,
                               pool_bits=6, lut_bits=9, max_fan_in=8, pool_table=pool_table)
    rng = np.random.default_rng(11)
    old, new = random_pool(rng, config), random_pool(rng, config)
    new[:, 0] = -old[:, 0]                        # every lookup sees the change
    x, y = random_beats(rng, config, 2)[:2]
    for b in (x, y):
        b.update(acts=np.full(POOL_GROUP, 255), index=np.array([0, 1]), lookup=1,
                 plane_lo=0, first=1, last=1)
    dut = PoolLookupEngine(config)
    log = {"i": [], "build": [], "results": []}

    async def bench(ctx):
        for payload in build_payloads(config, old, range(2)):
            ctx.set(dut.build.payload, payload)
            ctx.set(dut.build.valid, 1)
            await ctx.tick().until(dut.build.ready)
        ctx.set(dut.build.valid, 0)
        await ctx.tick().until(dut.build.ready)
        ctx.set(dut.o.ready, 1)
        beats = [x, y]
        vectors = build_payloads(config, new, range(2))
        # Cycle by cycle: x from cycle 0, y after it; new vectors from cycle 2.
        for cycle in range(1000):
            if beats:
                ctx.set(dut.i.payload, beat_payload(config, beats[0]))
            ctx.set(dut.i.valid, bool(beats))
            if vectors and cycle >= 2:
                ctx.set(dut.build.payload, vectors[0])
            ctx.set(dut.build.valid, bool(vectors) and cycle >= 2)
            if beats and ctx.get(dut.i.ready):
                log["i"].append(cycle)
                beats.pop(0)
            if ctx.get(dut.build.valid) and ctx.get(dut.build.ready):
                log["build"].append(cycle)
                vectors.pop(0)
            if ctx.get(dut.o.valid):
                log["results"].append(lanes_of(ctx.get(dut.o.payload), config))
            if len(log["results"]) == 2:
                return
            await ctx.tick()
        raise AssertionError(f"timeout: {log}")

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    # x (P = 8) goes in in cycle 7 and its last plane is read in 8: the build starts in
    # 9 (y, offered from 8, waits), the second vector table_rows + 1 cycles later, y when
    # that one is written.
    per_vector = table_rows + 1
    assert dut.build_cycles == per_vector
    assert log["build"] == [9, 9 + per_vector]
    assert log["i"] == [7, 9 + 2 * per_vector + 7]
    steps = [("build", (old, [0, 1])), ("beat", x), ("build", (new, [0, 1])), ("beat", y)]
    assert log["results"] == reference(config, steps)
    assert log["results"][0] != log["results"][1]


def test_make_engine_and_layouts():
    config = AcceleratorConfig(engine="pool", lanes=3, act_bits=6, pool_size=16,
                               pool_bits=5, lut_bits=12)
    dut = make_engine(config)
    assert type(dut) is PoolLookupEngine
    Fragment.get(dut, platform=None)
    assert engine_input_layout(config) == pool_input_layout(config)
    assert dut.i.payload.shape() == pool_input_layout(config)
    assert dut.o.payload.shape().size == config.lanes * config.acc_width
    layout = pool_input_layout(config)
    assert layout["weights"].shape.size == config.lanes * POOL_GROUP * 8
    assert layout["index"].shape.size == config.lanes * 4
    assert layout["plane_lo"].shape.width == 3
    build = pool_build_layout(config)
    assert build["values"].shape.size == POOL_GROUP * config.pool_bits
    # The shift field holds 0 .. pool_bits + 3.
    assert 1 << pool_shift_bits(config) > config.pool_bits + 3 >= 1 << (
        pool_shift_bits(config) - 1)
    assert dut.lut_depth == 256 * config.pool_size
    assert not {"fill", "gather", "step", "fill_row"} & {name for name, _ in layout}
    half = PoolLookupEngine(AcceleratorConfig(engine="pool", lanes=3, act_bits=6,
                                              pool_size=16, pool_bits=5, lut_bits=12,
                                              pool_table="half"))
    assert (half.table_count, half.table_depth, half.lut_depth) == (2, 16 * 16, 2 * 16 * 16)
    # Two table reads per lane, each 12 bits wide.
    text = rtlil.convert(half)
    assert re.findall(r"memory width (\d+) size (\d+)", text) == [("12", "256")] * 6
    assert text.count("cell $memrd_v2 ") == 2 * 3


def test_precompute_layout_and_store():
    """With ``precompute_steps`` the beat has fill, gather, step and fill_row, and the
    engine has a store copy (one more memory read port) per lane."""
    config = AcceleratorConfig(engine="pool", lanes=4, act_bits=6, pool_size=16,
                               pool_bits=5, lut_bits=12, tap_depth=40, precompute_steps=5)
    layout = pool_input_layout(config)
    assert layout["fill"].width == layout["gather"].width == 1
    assert layout["step"].width == count_width(40) == 6
    assert layout["fill_row"].width == addr_width(config.fill_rows) == 2
    assert precompute_shape(config).width == 6 + min(12, 5 + 3)
    # Without a store there is one per lane (test_table_copies_are_spram_on_ultraplus).
    text = rtlil.convert(PoolLookupEngine(config))
    assert text.count("cell $memrd_v2 ") == 2 * config.lanes


def test_other_engines_refused():
    # The rejected instances are never elaborated; line 1 silences Amaranth's warning.
    for engine in ("int8", "shiftadd"):
        with pytest.raises(ValueError, match="PoolLookupEngine implements engine 'pool'; "
                                             f"config field 'engine' is '{engine}'"):
            PoolLookupEngine(AcceleratorConfig(engine=engine))
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        PoolLookupEngine({"engine": "pool"})


class _UltraPlus:
    """The one thing the engine asks of a platform: its device."""

    device = "iCE40UP5K"


def test_table_copies_are_spram_on_ultraplus():
    """On an iCE40 UltraPlus each lane's table copy asks for SPRAM (16-bit entries: one
    block per 16K entries; wider entries: one per 16 bits); elsewhere, or when the
    copies would not fit the four SPRAMs, it is a memory for block RAM."""
    def sprams(**fields):
        config = AcceleratorConfig(engine="pool", **fields)
        text = rtlil.convert(PoolLookupEngine(config), platform=_UltraPlus())
        huge = re.findall(r'attribute \\ram_style "huge"\n\s*memory width (\d+) size (\d+)', text)
        blocks = sum(spram_blocks(int(width), int(depth)) for width, depth in huge)
        return blocks, text.count("cell $memrd_v2 ") - len(huge)

    assert sprams(lanes=2, pool_size=64, lut_bits=16) == (2, 0)
    assert sprams(lanes=4, pool_size=64, lut_bits=16) == (4, 0)
    assert sprams(lanes=1, pool_size=128, lut_bits=16) == (2, 0)
    assert sprams(lanes=2, pool_size=32, lut_bits=20) == (4, 0)
    assert sprams(lanes=3, pool_size=128, lut_bits=16) == (0, 3)
    # Half tables stay in block RAM: two memories per lane.
    assert sprams(lanes=2, pool_size=64, lut_bits=16, pool_table="half") == (0, 4)
    config = AcceleratorConfig(engine="pool", lanes=2)
    assert "ram_style" not in rtlil.convert(PoolLookupEngine(config))


@pytest.mark.synth
def test_synthesis_maps_tables_to_spram(tmp_path):
    """yosys ``synth_ice40`` of a 2-lane, 64-vector, 16-bit-entry engine for the UP5K:
    two SPRAMs, no block RAM, well inside the device's 5280 LUTs. The engine goes to
    yosys as RTLIL, as the board build's does: in Verilog each 16K-entry table's
    initialization is 16K statements, which took yosys ten times as long to read as to
    synthesize the engine."""
    config = AcceleratorConfig(engine="pool", lanes=2, pool_size=64, lut_bits=16)
    (tmp_path / "pool.il").write_text(
        rtlil.convert(PoolLookupEngine(config), name="pool_engine", platform=_UltraPlus()))
    proc = run_tool("yosys", ["-q", "-p", f"read_rtlil pool.il; {DROP_INIT}; synth_ice40 -spram "
                              "-top pool_engine; tee -o stat.txt stat"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    stat = (tmp_path / "stat.txt").read_text()
    cells = {name: int(count) for count, name in re.findall(r"(\d+)\s+(SB_\w+)", stat)}
    assert cells["SB_SPRAM256KA"] == 2
    assert "SB_RAM40_4K" not in cells
    assert cells["SB_LUT4"] < 1200, cells
