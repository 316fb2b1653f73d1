# amaranth: UnusedElaboratable=no
"""The whole accelerator (``shiftpool.hw.accelerator``) in Amaranth's simulator against
the golden model (``shiftpool.sw.schemes.golden``) and the cycle model
(``shiftpool.sw.compile.cycles``).

Random models (flightnn with all-k=1, all-k=2 and mixed filters, and int8), random
lane and tap counts, with and without max-pool, several inputs each; the load and
input streams have random idle cycles and the output stream random back-pressure.
Every inference must give the golden model's outputs bit for bit, and the ``cycles``
port must equal the cycle model's prediction exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator
from shiftpool.hw.accelerator import Accelerator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.program import REGIONS
from shiftpool.sim.kit import seeds, stream_get, stream_put, watchdog
from shiftpool.sw.compile.cycles import (
    group_shapes,
    inference_cycles,
    word_writes,
    writeback_stalls,
)
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import Image, compile_model
from shiftpool.sw.model.file import QuantModel
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes import golden, pool_golden

CLOCK_PERIOD = 1e-6
#: (scheme, k_mode) the seeds take in turn.
VARIANTS = (("flightnn", "k1"), ("flightnn", "k2"), ("flightnn", "mixed"), ("int8", "k1"))
#: Seeds of the default run; the slow sweep adds more.
SEEDS = seeds(60)
SLOW_SEEDS = seeds(30, start=80)
#: Seeds of the random pool models (test_pool_cases_cover_the_space checks what they
#: cover; SHIFTPOOL_SEED shifts every seed list, to explore others).
POOL_SEEDS = seeds(20, start=200)


@dataclasses.dataclass
class Case:
    """One randomized run: a model, a configuration fitted to it, inputs, and how
    hard the streams are throttled."""

    seed: int
    model: QuantModel
    config: AcceleratorConfig
    x: np.ndarray
    idle_gap: float
    back_pressure: float
    bits: int | None = None     # pool models: run-time precision
    mode: str = "direct"        # pool models: direct or precompute
    im2col: bool | None = None  # the first layer's input layout (compile_model's choice)


    def describe(self) -> str:
        layers = [(layer.kind, layer.out_shape) for layer in self.model.layers]
        pool = (f", S {self.config.pool_size}, lut_bits {self.config.lut_bits}, bits "
                f"{self.bits}, {self.mode}" if self.model.scheme == "pool" else "")
        return (f"seed {self.seed}: {self.model.scheme}, lanes {self.config.lanes}, taps "
                f"{self.config.taps}, act_bits {self.model.act_bits}{pool}, layers {layers}")


def _width(rng: np.random.Generator, lanes: int, taps: int, lo: int, hi: int) -> int:
    """A layer width in ``lo..hi``, preferably divisible by neither ``lanes`` nor
    ``taps`` (partial lane groups and partial tap rows)."""
    choices = [w for w in range(lo, hi + 1) if (lanes == 1 or w % lanes)
               and (taps == 1 or w % taps)]
    return int(rng.choice(choices or list(range(lo, hi + 1))))


def random_case(seed: int) -> Case:
    """Every choice comes from ``seed``; the variant and the max-pool alternate with it
    so that a few consecutive seeds cover every feature."""
    rng = np.random.default_rng(seed)
    scheme, k_mode = VARIANTS[seed % len(VARIANTS)]
    pool = bool(seed // len(VARIANTS) % 2)
    lanes, taps = int(rng.integers(1, 6)), int(rng.integers(1, 10))
    act_bits = int(rng.integers(3, 9))
    side = (2, 9) if pool else (1, 9)
    input_shape = (int(rng.integers(1, 4)), int(rng.integers(*side)), int(rng.integers(*side)))
    convs = tuple(_width(rng, lanes, taps, 1, 9) for _ in range(int(rng.integers(pool, 3))))
    # The output layer must fit the descriptor's channel field (sized by act_depth).
    sizes = [int(np.prod(input_shape))] + [c * input_shape[1] * input_shape[2] for c in convs]
    top = min(12, max(sizes))
    dense = tuple(_width(rng, lanes, taps, 1, 12) for _ in range(int(rng.integers(0, 3))))
    dense += (_width(rng, lanes, taps, 1, top),)
    model = random_model(rng, scheme=scheme, act_bits=act_bits,
                         exp_bits=int(rng.integers(1, 4)), k_mode=k_mode,
                         input_shape=input_shape, convs=convs, pool=pool and bool(convs),
                         dense=dense)
    config = flip_writeback(seed, fit_config(model, lanes=lanes, taps=taps))
    x = rng.integers(0, 1 << act_bits, size=(3,) + input_shape)
    return Case(seed, model, config, x, idle_gap=float(rng.choice([0.0, 0.3, 0.6])),
                back_pressure=float(rng.choice([0.0, 0.3, 0.6])))


def flip_writeback(seed: int, config: AcceleratorConfig) -> AcceleratorConfig:
    """``config`` (fit_config's choice of write-back) for half the seeds, the other
    write-back for the rest, so that both run with and without stalls."""
    if seed // 8 % 2 == 0:
        return config
    other = {"lane": "word", "word": "lane"}[config.writeback]
    return dataclasses.replace(config, writeback=other)


def random_pool_case(seed: int) -> Case:
    """A random pool model: int8 first layer (1..3 input channels), pooled layers where
    the inputs group by 8, random pool size, value and entry widths, lanes, precision;
    odd seeds have half tables."""
    rng = np.random.default_rng(seed)
    lanes = int(rng.integers(1, 5))
    act_bits = int(rng.integers(2, 9))
    pool = bool(rng.integers(0, 2))
    side = (2, 7) if pool else (1, 6)
    input_shape = (int(rng.integers(1, 4)), int(rng.integers(*side)), int(rng.integers(*side)))
    convs = tuple(int(rng.choice([8, 16, 5])) for _ in range(int(rng.integers(1, 3))))
    dense = tuple(int(rng.integers(2, 12)) for _ in range(int(rng.integers(0, 2))))
    dense += (int(rng.integers(2, 11)),)
    model = random_model(rng, scheme="pool", act_bits=act_bits, input_shape=input_shape,
                         convs=convs, pool=pool, dense=dense,
                         pool_size=int(rng.choice([2, 4, 8, 16])),
                         pool_bits=int(rng.integers(3, 9)), lut_bits=int(rng.integers(6, 17)),
                         pool_table=("full", "half")[seed % 2])
    # Precompute mode needs a power-of-two lane count no larger than the pool.
    pooled = any(layer.is_pool for layer in model.layers)
    mode = ("precompute" if pooled and lanes in (1, 2, 4) and lanes <= len(model.pool)
            and rng.random() < 0.5 else "direct")
    config = flip_writeback(seed, fit_config(model, lanes=lanes, mode=mode))
    x = rng.integers(0, 1 << act_bits, size=(2,) + input_shape)
    bits = None if rng.random() < 0.25 else int(rng.integers(1, act_bits + 1))
    return Case(seed, model, config, x, idle_gap=float(rng.choice([0.0, 0.3])),
                back_pressure=float(rng.choice([0.0, 0.3])), bits=bits, mode=mode)


def run_rtl(image: Image, x: np.ndarray, seed: int, idle_gap: float,
            back_pressure: float) -> tuple[np.ndarray, list[int]]:
    """Load ``image``, run every input of ``x`` through the accelerator in Amaranth's
    simulator; returns the outputs ``(N, classes)`` and the ``cycles`` port after each
    inference."""
    cfg = image.config
    dut = Accelerator(cfg)
    inputs = image.input_stream(x)
    classes = image.output_words
    outputs, cycles = [], []
    # No handshake can wait longer than a whole inference, with slack for the gaps, or
    # than the pool engine's build of one lookup-table column (256 cycles) on a load.
    limit = 8 * (inference_cycles(image) + inputs.shape[1] + classes) + 400

    async def source(ctx):
        rng = np.random.default_rng([seed, 1])
        rows = ({"region": code, "addr": addr, "data": row}
                for code, name in enumerate(REGIONS)
                for addr, row in enumerate(image.regions[name]))
        await stream_put(ctx, dut.load, rows, rng, idle_gap, limit)
        # The next input is offered at once: it waits (inp.ready low) until the
        # accelerator has sent this one's outputs.
        words = ({"data": int(word), "last": i == len(row) - 1}
                 for row in inputs for i, word in enumerate(row))
        await stream_put(ctx, dut.inp, words, rng, idle_gap, limit)

    async def sink(ctx):
        rng = np.random.default_rng([seed, 2])
        for _ in inputs:
            taken = await stream_get(ctx, dut.out, classes, rng, back_pressure, dut.cycles)
            lasts = [int(word.last) for word, _ in taken]
            assert lasts == [0] * (classes - 1) + [1], f"out.last on the words: {lasts}"
            outputs.append([int(word.data) for word, _ in taken])
            cycles.append(taken[-1][1])
        for _ in range(4):
            await ctx.tick()
            assert not ctx.get(dut.out.valid), "an output word too many"

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.add_testbench(watchdog(limit * (len(inputs) + 1), lambda: f"({len(outputs)} of "
                                                             f"{len(inputs)} inferences)"),
                      background=True)
    sim.run()
    return np.asarray(outputs, dtype=np.int64), cycles


def check_case(case: Case) -> None:
    pooled = any(layer.is_pool for layer in case.model.layers)
    bits = case.bits if pooled else None
    image = compile_model(case.model, case.config, bits=bits, mode=case.mode,
                          im2col=case.im2col)
    out, cycles = run_rtl(image, case.x, case.seed, case.idle_gap, case.back_pressure)
    expected = golden.run(case.model, case.x, bits=bits, mode=case.mode)
    for n in range(len(case.x)):
        bad = np.flatnonzero(out[n] != expected[n])
        assert len(bad) == 0, (f"{case.describe()}: input {n}, output {bad[0]}: RTL "
                               f"{out[n, bad[0]]} != golden {expected[n, bad[0]]}")
    predicted = inference_cycles(image)
    assert cycles == [predicted] * len(case.x), (
        f"{case.describe()}: RTL cycles {cycles} != cycle model {predicted}")


@pytest.mark.parametrize("seed", SEEDS, ids=lambda seed: f"seed{seed}")
def test_random_model(seed):
    check_case(random_case(seed))


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS, ids=lambda seed: f"seed{seed}")
def test_random_model_sweep(seed):
    check_case(random_case(seed))


@pytest.mark.parametrize("seed", POOL_SEEDS, ids=lambda seed: f"seed{seed}")
def test_random_pool_model(seed):
    case = random_pool_case(seed)
    assert case.config.engine == "pool"
    check_case(case)


def test_pool_cases_cover_the_space():
    """The random pool cases include pooled conv and dense layers, int8 layers, every
    lane count, several pool sizes, full and reduced precision."""
    cases = [random_pool_case(s) for s in POOL_SEEDS]
    layers = [layer for c in cases for layer in c.model.layers if layer.is_mac]
    assert any(layer.is_pool and layer.kind == "conv3x3" for layer in layers)
    assert any(layer.is_pool and layer.kind == "dense" for layer in layers)
    assert any(not layer.is_pool for layer in layers)
    assert {c.config.lanes for c in cases} == {1, 2, 3, 4}
    assert len({c.config.pool_size for c in cases}) >= 3
    assert any(c.bits is None for c in cases) and any(c.bits == 1 for c in cases)
    assert {c.mode for c in cases} == {"direct", "precompute"}
    half = [c for c in cases if c.config.pool_table == "half"]
    assert half and len(half) < len(cases)
    assert any(pool_golden.model_lut(c.model)[1] > 0 for c in half)    # narrowed halves


def test_writeback_bound_layer():
    """One tap row per group (``R = 1``) but four lanes to write: written lane by lane,
    the write-back unit is the bottleneck, so results wait in the engine and the issue
    pipeline stalls; fit_config therefore picks the word path, which writes each
    group's lanes (all in one word of 9 lanes) in one cycle and does not stall there."""
    rng = np.random.default_rng(7)
    model = random_model(rng, k_mode="k1", input_shape=(1, 4, 3), convs=(7,), pool=True,
                         dense=(5,))
    config = fit_config(model, lanes=4, taps=9)
    assert config.writeback == "word"
    lane = fit_config(model, lanes=4, taps=9, writeback="lane")
    assert lane == dataclasses.replace(config, writeback="lane")
    image = compile_model(model, lane)
    shapes = group_shapes(image.plans[0], 7, config.lanes)
    assert [r for r, _ in shapes] == [1, 1]
    assert writeback_stalls(image)
    assert any(r < v for (r, _), (_, v) in zip(shapes, shapes[-1:] + shapes[:-1],
                                               strict=True))
    word = compile_model(model, config)
    assert group_shapes(word.plans[0], 7, config.lanes, config.taps) == [(1, 1), (1, 1)]
    assert inference_cycles(word) < inference_cycles(image)
    x = rng.integers(0, 256, size=(2, 1, 4, 3))
    check_case(Case(7, model, lane, x, 0.3, 0.3))
    check_case(Case(7, model, config, x, 0.3, 0.3))


def test_cases_cover_both_writebacks():
    """The random cases run both write-backs, the word path on layers it writes a word
    at a time, with and without stalls."""
    cases = [random_case(s) for s in SEEDS]
    word = [c for c in cases if c.config.writeback == "word"
            and any(word_writes(compile_model(c.model, c.config), i)
                    for i, layer in enumerate(c.model.layers) if layer.is_mac)]
    assert word and len(word) < len(cases)
    assert {writeback_stalls(compile_model(c.model, c.config)) for c in cases} == {True, False}


@pytest.mark.parametrize("taps", [1, 2, 3, 4, 5])
def test_maxpool_read_ports(taps):
    """Max-pool reads its 2x2 window through ``taps`` ports: in one cycle when
    ``taps >= 4``, in ``ceil(4 / taps)`` otherwise; an odd row and column are dropped."""
    rng = np.random.default_rng(100 + taps)
    model = random_model(rng, k_mode="mixed", input_shape=(2, 5, 7), convs=(3,), pool=True,
                         dense=(4,))
    config = fit_config(model, lanes=2, taps=taps)
    check_case(Case(100 + taps, model, config, rng.integers(0, 256, size=(2, 2, 5, 7)),
                    0.3, 0.3))


def test_cycles_follow_passes():
    """The cycle model charges one pass per k=1 filter and two per k=2 filter: an all-k=1
    model beats a mixed one, which beats an all-k=2 one, when rows dominate."""
    counts = []
    for k_mode in ("k1", "mixed", "k2"):
        rng = np.random.default_rng(3)
        model = random_model(rng, k_mode=k_mode, input_shape=(4, 6, 6), convs=(12,),
                             pool=True, dense=(8,))
        counts.append(inference_cycles(compile_model(model, fit_config(model, 4, 8))))
    assert counts[0] < counts[1] < counts[2], counts


def test_precompute_pays_when_filters_outnumber_the_pool():
    """A pooled conv layer with 48 filters and a pool of 8: precompute mode (8 lookups
    per step and plane, shared by all filters) takes fewer cycles than direct mode
    (48), and both give the golden model's outputs with the predicted cycles."""
    rng = np.random.default_rng(11)
    model = random_model(rng, scheme="pool", act_bits=6, input_shape=(8, 3, 3), convs=(48,),
                         pool=False, dense=(4,), pool_size=8, pool_bits=6, lut_bits=10)
    assert model.layers[0].is_pool and model.layers[0].out_shape[0] > len(model.pool)
    x = rng.integers(0, 64, size=(1, 8, 3, 3))
    cycles = {}
    for mode in ("direct", "precompute"):
        config = fit_config(model, lanes=2, mode=mode)
        # every MAC layer is pooled: the engine is built without its int8 path
        assert not config.int8_path and config.as_dict()["int8_path"] is False
        cycles[mode] = inference_cycles(compile_model(model, config, mode=mode))
        check_case(Case(11, model, config, x, 0.0, 0.0, bits=None, mode=mode))
    assert cycles["precompute"] < cycles["direct"], cycles
