# amaranth: UnusedElaboratable=no
"""The MLG weight generator (``hw/engines/generator.py``) and the in-situ engine
(``hw/engines/insitu.py``): random layers (Bi, Bc, bit widths, shapes, levels on and
off) laid out by ``sw/compile/mlg_layout.py``, generated in Amaranth's simulator and
on cocotb (Icarus, Verilator), against ``sw/model/file.mlg_weight`` (the golden
model's weights); rows every ``count + GEN_LATENCY`` cycles."""

from __future__ import annotations

import types

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator
from shiftpool.hw.config import AcceleratorConfig, ConfigError
from shiftpool.hw.engines.generator import WeightGenerator
from shiftpool.hw.generator_layout import GEN_LATENCY, STORES, row_cycles
from shiftpool.hw.program import pack
from shiftpool.sim.kit import seeds, stream_get, stream_put, watchdog
from shiftpool.sim.units import GeneratorHarness, load_fields
from shiftpool.sw.compile.mlg_layout import layer_requests, pack_requests, place_layer
from shiftpool.sw.model.file import Layer, mlg_weight

CLOCK_PERIOD = 1e-6


# -- random layers -----------------------------------------------------------------------

def random_config(rng) -> AcceleratorConfig:
    return AcceleratorConfig(
        engine="insitu", lanes=int(rng.integers(1, 5)), taps=int(rng.integers(1, 12)),
        mlg_qb=int(rng.integers(2, 9)), mlg_qu=int(rng.integers(2, 9)),
        mlg_qv=int(rng.integers(2, 9)), mlg_bi=int(rng.integers(1, 5)),
        mlg_bc=int(rng.integers(1, 9)), mlg_v_depth=512, mlg_u_depth=512, mlg_b_depth=64,
        mlg_w1_depth=512)


def odd(rng, q: int, shape) -> np.ndarray:
    """Odd integers within +-(2**q - 1), a fifth of them at the extremes."""
    top = (1 << q) - 1
    v = 2 * rng.integers(-(top + 1) // 2, (top + 1) // 2, size=shape) + 1
    return np.where(rng.random(shape) < 0.2, rng.choice([-top, top], size=shape), v)


def random_layer(rng, cfg: AcceleratorConfig, level1: bool, level2: bool):
    """A legal mlg layer for ``cfg`` and its model widths (a namespace with ``layers``,
    ``qb``, ``qu``, ``qv``), with the levels asked for."""
    qb, qu, qv = (int(rng.integers(2, getattr(cfg, f) + 1))
                  for f in ("mlg_qb", "mlg_qu", "mlg_qv"))
    kind = "conv3x3" if level1 or rng.random() < 0.5 else "dense"
    kk = 9 if kind == "conv3x3" else 1
    # Level 1 needs Bi < Ci; level 2 needs Bc < Ci*kk.
    ci = int(rng.integers(2 if level1 or level2 else 1, 5))
    if level1:
        bi = int(rng.integers(1, min(ci, kk, cfg.mlg_bi + 1)))
    co_min = 2 if level2 else 1
    co = int(rng.integers(co_min, 2 * cfg.lanes + 3))
    if level2:
        bc = int(rng.integers(1, min(co, ci * kk, cfg.mlg_bc + 1)))
    else:
        bc = co
    shape = (ci, 4, 3) if kind == "conv3x3" else (ci,)
    out = (co, 4, 3) if kind == "conv3x3" else (co,)
    layer = Layer(kind=kind, in_shape=shape, out_shape=out, bias=np.zeros(co, np.int64))
    if level1:
        layer.mlg_u, layer.mlg_b = odd(rng, qu, (bc, ci, bi)), odd(rng, qb, (bc, bi, kk))
    else:
        layer.mlg_w1 = odd(rng, qu, (bc, ci, kk))
    if level2:
        layer.mlg_v = odd(rng, qv, (co, bc))
    return layer, types.SimpleNamespace(layers=[layer], qb=qb, qu=qu, qv=qv)


def expected_rows(cfg: AcceleratorConfig, layer, grouped: bool) -> list[list[list[int]]]:
    """The golden model's weights, cut into the engine's rows ``(g, s)`` by hand: lane
    ``l``, tap ``j`` is filter ``g*lanes + l``'s weight at tap ``j``'s input (grouped
    step ``s = G*9 + k``: channel ``G*taps + j`` at kernel position ``k``; flat: the
    flattened input ``s*taps + j``), zero outside ``W``."""
    co = layer.out_shape[0]
    flat = mlg_weight(layer).reshape(co, -1)
    ci = layer.in_shape[0]
    kk = flat.shape[1] // ci if grouped else 1
    groups = -(-co // cfg.lanes)
    rows = []
    for g in range(groups):
        if grouped:
            taps = [[(G * cfg.taps + j) * kk + k if G * cfg.taps + j < ci else None
                     for j in range(cfg.taps)]
                    for G in range(-(-ci // cfg.taps)) for k in range(kk)]
        else:
            taps = [[t if t < flat.shape[1] else None
                     for t in range(s * cfg.taps, (s + 1) * cfg.taps)]
                    for s in range(-(-flat.shape[1] // cfg.taps))]
        for step in taps:
            rows.append([[int(flat[g * cfg.lanes + lane, t])
                          if g * cfg.lanes + lane < co and t is not None else 0
                          for t in step] for lane in range(cfg.lanes)])
    return rows


def random_case(seed: int, layers: int = 4):
    """A config and ``layers`` random layers (every level combination in turn), laid
    out in one set of stores: the load payloads, the packed requests, the expected rows
    and each request's ``count``."""
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    stores = {name: [] for name in STORES}
    requests, rows = [], []
    for n in range(layers):
        level1, level2 = bool(n & 1), bool(n & 2)
        layer, model = random_layer(rng, cfg, level1, level2)
        grouped = layer.kind == "conv3x3" and bool(rng.random() < 0.7)
        placed = place_layer(cfg, model, 0, stores, grouped=grouped)
        assert (placed.level1, placed.level2, placed.grouped) == (level1, level2, grouped)
        requests += layer_requests(cfg, placed)
        rows += expected_rows(cfg, layer, grouped)
    load = [pack(load_fields(cfg), dict(store=code, addr=addr, data=row))
            for code, name in enumerate(STORES) for addr, row in enumerate(stores[name])]
    return cfg, load, pack_requests(cfg, requests), rows, [r["count"] for r in requests]


def decode_rows(cfg: AcceleratorConfig, words: list[int]) -> list:
    """Raw ``o`` payloads as ``lanes x taps`` signed weights (``row[l][j]`` at flat index
    ``l*taps + j``, ``mlg_w_width`` bits each)."""
    width = cfg.mlg_w_width
    out = []
    for word in words:
        vals = [(word >> (k * width)) & ((1 << width) - 1) for k in range(cfg.lanes * cfg.taps)]
        vals = [v - (1 << width) if v >> (width - 1) else v for v in vals]
        out.append([vals[lane * cfg.taps:(lane + 1) * cfg.taps] for lane in range(cfg.lanes)])
    return out


# -- Amaranth's simulator ----------------------------------------------------------------

def as_payloads(stream, words: list[int]) -> list:
    """Raw payload bits as constants of ``stream``'s payload layout."""
    return [data.Const(stream.payload.shape(), w) for w in words]


def simulate(cfg, load, requests, count, seed, idle, stall):
    """Rows of the harness (load, then requests with idle cycles, rows with
    back-pressure) and the cycles each request and row moved at."""
    dut = GeneratorHarness(cfg)
    words = []

    async def loader(ctx):
        await stream_put(ctx, dut.load, as_payloads(dut.load, load))
        await stream_put(ctx, dut.i, as_payloads(dut.i, requests),
                         np.random.default_rng([seed, 1]), idle)

    async def sink(ctx):
        got = await stream_get(ctx, dut.o, count, np.random.default_rng([seed, 2]), stall)
        words.extend(int(w.as_value().value) for w in got)
        for _ in range(4):
            await ctx.tick()
            assert not ctx.get(dut.o.valid), f"seed {seed}: a row too many"

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(loader)
    sim.add_testbench(sink)
    sim.add_testbench(watchdog(200_000, lambda: f"(seed {seed}: {len(words)} of {count})"),
                      background=True)
    sim.run()
    return decode_rows(cfg, words)


@pytest.mark.parametrize("seed", seeds(6, start=1400))
def test_generator_equals_mlg_weight(seed):
    cfg, load, requests, rows, _ = random_case(seed)
    idle, stall = np.random.default_rng(seed).choice([0.0, 0.3, 0.6], size=2)
    got = simulate(cfg, load, requests, len(rows), seed, idle, stall)
    assert got == rows, f"seed {seed}, {cfg}, idle {idle}, stall {stall}"


def test_generator_bad_config_is_one_line():
    with pytest.raises(ValueError, match="needs engine 'insitu'; config field 'engine'"):
        WeightGenerator(AcceleratorConfig(engine="int8"))
    for field, value in (("mlg_qb", 9), ("mlg_bi", 0), ("mlg_bi", 9), ("mlg_bc", 0)):
        with pytest.raises(ConfigError, match=f"config field '{field}' = {value} is out of "
                                              f"range"):
            AcceleratorConfig(engine="insitu", **{field: value})


def test_layout_refuses_what_does_not_fit():
    rng = np.random.default_rng(7)
    cfg = AcceleratorConfig(engine="insitu", lanes=2, taps=4, mlg_qb=3, mlg_qu=4, mlg_qv=3,
                            mlg_bi=2, mlg_bc=4)
    layer, model = random_layer(rng, cfg, True, True)
    for store in STORES[:3]:        # level 1 and 2 on: no w1 rows
        small = AcceleratorConfig(**{**cfg.as_dict(), f"mlg_{store}_depth": 1})
        with pytest.raises(ConfigError, match=f"config field 'mlg_{store}_depth' = 1 is too "
                                              f"small: the '{store}' store needs"):
            place_layer(small, model, 0, {name: [] for name in STORES})
    model.qu = 6
    with pytest.raises(ConfigError, match="config field 'mlg_qu' = 4 is too small"):
        place_layer(cfg, model, 0, {name: [] for name in STORES})


def test_widths_are_the_papers():
    """W1: qu + qb + ceil(log2 Bi) + 1 signed bits; W: qv + ceil(log2 Bc) more; the
    largest |W| of the widest values fills its top magnitude bit."""
    cfg = AcceleratorConfig(engine="insitu", lanes=1, taps=9, mlg_qb=3, mlg_qu=6, mlg_qv=3,
                            mlg_bi=2, mlg_bc=44)
    assert cfg.mlg_w1_width == 6 + 3 + 1 + 1
    assert cfg.mlg_w_width == 11 + 3 + 6
    assert cfg.code_width == 20
    top = 44 * 7 * 2 * 63 * 7
    assert top < 1 << 19 and top >= 1 << 17


def test_generator_row_period_without_stalls():
    """With requests always offered and rows always taken, row ``k`` leaves
    ``count + GEN_LATENCY`` cycles after its request was accepted, and the next request
    is accepted in that cycle (the cycle model's generator term)."""
    cfg, load, requests, rows, counts = random_case(4242, layers=4)
    dut = GeneratorHarness(cfg)
    moved = []

    async def bench(ctx):
        await stream_put(ctx, dut.load, as_payloads(dut.load, load))
        requests_ = as_payloads(dut.i, requests)
        ctx.set(dut.o.ready, 1)
        cycle, sent = 0, 0
        ctx.set(dut.i.payload, requests_[0])
        ctx.set(dut.i.valid, 1)
        while len(moved) < 2 * len(requests) and cycle < 100_000:
            i_ready, o_valid = ctx.get(dut.i.ready), ctx.get(dut.o.valid)
            if o_valid:
                moved.append(("o", cycle))
            accepted = i_ready and sent < len(requests)
            await ctx.tick()
            if accepted:
                moved.append(("i", cycle))
                sent += 1
                if sent < len(requests):
                    ctx.set(dut.i.payload, requests_[sent])
                else:
                    ctx.set(dut.i.valid, 0)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    ins = [c for kind, c in moved if kind == "i"]
    outs = [c for kind, c in moved if kind == "o"]
    assert [o - i for i, o in zip(ins, outs, strict=True)] == [row_cycles(n) for n in counts]
    assert ins[1:] == outs[:-1]
    assert GEN_LATENCY == 3


# -- cocotb: Icarus and Verilator ---------------------------------------------------------

SIMULATORS = [
    pytest.param("icarus", marks=[pytest.mark.icarus, pytest.mark.slow]),
    pytest.param("verilator", marks=[pytest.mark.verilator, pytest.mark.slow]),
]


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_generator_on_cocotb(simulator, sim_build_dir):
    """One random config built once; its layers run without stalls (the row period
    checked) and with idle requests and back-pressure on the rows."""
    from shiftpool.sim.units import run_unit

    for seed, idle, stall in ((seeds(1, start=1500)[0], 0.0, 0.0),
                              (seeds(1, start=1500)[0], 0.3, 0.4)):
        cfg, load, requests, rows, counts = random_case(seed, layers=8)
        run = run_unit("generator", cfg, load, requests, len(rows), simulator, seed, idle,
                       stall, build_dir=sim_build_dir)
        assert decode_rows(cfg, run.outputs) == rows, f"seed {seed}, {simulator}, {cfg}"
        if not idle and not stall:
            assert [o - i for i, o in zip(run.in_cycles, run.out_cycles, strict=True)] == [
                row_cycles(n) for n in counts], f"seed {seed}, {simulator}"


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_engine_on_cocotb(simulator, sim_build_dir):
    """The in-situ engine alone: random beats of full-width generated weights (the
    extremes included) against ``engine_reference``, with idle beats and back-pressure."""
    from shiftpool.sim.units import run_unit
    from test_engines import beat_payload, random_beats, reference

    seed = seeds(1, start=1600)[0]
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    cfg = AcceleratorConfig(**{**cfg.as_dict(), "act_bits": int(rng.integers(2, 9)),
                               "max_fan_in": 5 * cfg.taps})
    beats = random_beats(rng, cfg, products=12)
    words = [int(beat_payload(cfg, beat).as_value().value) for beat in beats]
    expected = reference(cfg, beats)
    run = run_unit("engine", cfg, [], words, len(expected), simulator, seed, 0.3, 0.4,
                   build_dir=sim_build_dir)
    width, mask = cfg.acc_width, (1 << cfg.acc_width) - 1
    got = [[(w >> (lane * width) & mask) - ((w >> (lane * width + width - 1) & 1) << width)
            for lane in range(cfg.lanes)] for w in run.outputs]
    assert got == expected, f"seed {seed}, {simulator}, {cfg}"
