"""The issue pipeline (``shiftpool.hw.controller.issue``) in Amaranth's simulator, on
layers the compiler laid out (``shiftpool.sw.compile.image``).

A MAC layer: the unit reads the image's tap and weight rows and the input map's
activation words (their pad lanes hold noise, which the tap rows' masks must hide);
the bench plays the engine (a beat taken only while its one result register is free
or being emptied, with random refusals besides) and the write-back unit (a result
sink with back-pressure). Accumulating the beats as the engine would gives each
group's result; with its group data (channel, bias row, output word and lane) every
result must equal the golden model's dot products (``golden.mac``) at its position,
and the group data must say where the model-format puts that channel. Without
back-pressure beat ``k`` reaches the engine at cycle ``1 + ISSUE_LATENCY + k`` of the
layer (cycle 0 its DECODE), ``area * sum(R_j)`` beats in all (the cycle model's
``group_shapes``).

A max-pool layer: one window read beat per cycle, ``pool_phases`` (or
``flat_phases``) per window, each window's base, output word and lane and channel
count as the max-pool unit's test defines them, the last in cycle ``windows * P``.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Value, unsigned
from amaranth.lib import memory
from amaranth.sim import Simulator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.controller.issue import Issue
from shiftpool.hw.program import (
    KIND_POOL,
    POOL_WINDOW,
    act_words,
    descriptor_fields,
    engine_stages,
    flat_phases,
    pack,
    unpack,
)
from shiftpool.sim.kit import seeds, watchdog
from shiftpool.sw.compile.cycles import ISSUE_LATENCY, group_shapes
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import compile_model, map_layout
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes import golden

CLOCK_PERIOD = 1e-6


class Harness(Elaboratable):
    """The unit reading memories that hold ``rows`` (region -> list of ints; ``act``:
    the activation words of the buffer the layer reads)."""

    def __init__(self, config, rows):
        self.dut = Issue(config)
        self.rows = rows

    def elaborate(self, platform):
        cfg = self.dut.config
        m = Module()
        m.submodules.dut = dut = self.dut
        depth = {"taps": cfg.tap_depth, "weights": cfg.weight_depth, "act": act_words(cfg)}
        for name, rows in self.rows.items():
            user = getattr(dut, f"{name}_rd")
            mem = memory.Memory(shape=unsigned(len(Value.cast(user.data))),
                                depth=depth[name], init=rows)
            m.submodules[name] = mem
            port = mem.read_port()
            m.d.comb += [port.addr.eq(user.addr), port.en.eq(user.en), user.data.eq(port.data)]
        return m


def term(cfg, code: int) -> int:
    """The weight a packed code stands for (``encode_code``'s inverse)."""
    if cfg.engine == "int8":
        return code - 256 if code >= 128 else code
    if not code >> (cfg.exp_bits + 1) & 1:
        return 0
    return (-1 if code >> cfg.exp_bits & 1 else 1) << (code & ((1 << cfg.exp_bits) - 1))


def input_words(image, x, rng) -> list[int]:
    """The input map as the loader stores it: ``in_lanes`` values a word (layer 0's
    descriptor field), noise in the other lanes."""
    cfg = image.config
    values = image.input_stream(x)[0]
    lanes = unpack(descriptor_fields(cfg), image.descriptors[0])["in_lanes"]
    words = []
    for k in range(-(-len(values) // lanes)):
        word = [int(v) for v in values[k * lanes:(k + 1) * lanes]]
        word += [int(v) for v in rng.integers(0, 1 << cfg.act_bits, size=cfg.taps - len(word))]
        words.append(sum(v << (j * cfg.act_bits) for j, v in enumerate(word)))
    return words


def mac_case(seed: int):
    rng = np.random.default_rng(seed)
    scheme, k_mode = (("flightnn", "mixed"), ("flightnn", "k2"), ("int8", "k1"))[seed % 3]
    lanes, taps = int(rng.integers(1, 5)), int(rng.integers(1, 7))
    variant = seed % 4      # dense first; conv -> dense; dense -> dense; conv -> conv
    convs = {0: (), 1: (int(rng.integers(2, 8)),), 2: (),
             3: (int(rng.integers(2, 8)), int(rng.integers(2, 5)))}[variant]
    dense = (int(rng.integers(2, 9)),) * (variant in (0, 2)) + (int(rng.integers(2, 6)),)
    side = (2, 5) if convs else (1, 4)
    input_shape = (int(rng.integers(1, 6)), int(rng.integers(*side)), int(rng.integers(*side)))
    model = random_model(rng, scheme=scheme, act_bits=int(rng.integers(3, 9)), k_mode=k_mode,
                         input_shape=input_shape, convs=convs, pool=False, dense=dense)
    cfg = fit_config(model, lanes=lanes, taps=taps)
    image = compile_model(model, cfg)
    x = rng.integers(0, 1 << model.act_bits, size=(1,) + input_shape)
    return rng, image, x


def run(harness, program_row: int, mode: str, beat_take=None, result_take=None, sums=None,
        limit: int = 20000):
    """Start the layer of descriptor ``program_row`` and run it in ``mode`` ("mac" or
    "pool") until its end. The bench's engine takes a beat when ``beat_take()`` (and
    its result register allows), moves it through its ``engine_stages`` register
    stages as it takes beats, and presents ``sums(beats)`` a cycle after a beat with
    ``last`` leaves them; its write-back sink takes a result when ``result_take()``.
    Returns ``(beats, results, ends, windows)``: ``(cycle, payload)`` lists."""
    dut = harness.dut
    beats, results, ends, windows = [], [], [], []

    async def bench(ctx):
        ctx.set(Value.cast(dut.control.next), program_row)
        ctx.set(Value.cast(dut.layer), program_row)
        ctx.set(dut.control.start, 1)
        await ctx.tick()
        ctx.set(dut.control.start, 0)
        ctx.set(getattr(dut.control, mode), 1)
        running, held, since = True, None, []      # held: the engine's result
        pipe = [None] * engine_stages(harness.dut.config)   # beats in the engine's stages
        cycle = 1
        while running or held is not None or not ctx.get(dut.idle):
            rr = int(result_take()) if result_take else 1
            ctx.set(dut.result.ready, rr)
            ctx.set(dut.sums.valid, held is not None)
            if held is not None:
                ctx.set(dut.sums.payload, held)
            br = int((held is None or rr) and (beat_take() if beat_take else True))
            ctx.set(dut.beat.ready, br)
            _, _, end, bvalid, beat, rvalid, result, wvalid, window = await ctx.tick().sample(
                dut.control.end, dut.beat.valid, dut.beat.payload, dut.result.valid,
                dut.result.payload, dut.window.valid, dut.window.payload)
            if running and end:
                ends.append(cycle)
                running = False
                ctx.set(getattr(dut.control, mode), 0)
            if wvalid:
                windows.append((cycle, window))
            if rvalid and rr:
                assert held is not None
                results.append((cycle, result))
                held = None
            if bvalid and br:
                beats.append((cycle, beat))
            if br:
                # The engine's register stages move when it takes a beat (or could).
                pipe.append(beat if bvalid else None)
                done = pipe.pop(0)
                if done is not None:
                    since.append(done)
                    if done.last:
                        held = sums(since)
                        since = []
            cycle += 1

    sim = Simulator(harness)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.add_testbench(watchdog(limit), background=True)
    sim.run()
    return beats, results, ends, windows


def engine_sums(cfg):
    """The engine's accumulation over one group's beats: per lane, the sum over beats
    and taps of weight times activation."""
    def sums(group_beats):
        acc = [0] * cfg.lanes
        for beat in group_beats:
            acts = int(ctx_value(beat.acts))
            codes = int(ctx_value(beat.codes))
            for lane in range(cfg.lanes):
                for j in range(cfg.taps):
                    a = acts >> (j * cfg.act_bits) & ((1 << cfg.act_bits) - 1)
                    code = codes >> ((lane * cfg.taps + j) * cfg.code_width) & (
                        (1 << cfg.code_width) - 1)
                    acc[lane] += term(cfg, code) * a
        return acc
    return sums


def ctx_value(const) -> int:
    """The bits of a sampled payload field."""
    return const.as_value().value if hasattr(const, "as_value") else int(const)


def where(cfg, layout, area, chan, pos):
    """Word and lane of channel ``chan`` at position ``pos`` (``docs/model-format.md``,
    "activation words")."""
    if layout == "flat":
        return divmod(chan * area + pos, cfg.taps)
    return (chan // cfg.taps) * area + pos, chan % cfg.taps


@pytest.mark.parametrize("seed", seeds(8))
def test_mac_layer_beats_give_the_golden_dot_products(seed):
    rng, image, x = mac_case(seed)
    cfg, model, plan = image.config, image.model, image.plans[0]
    layer = model.layers[0]
    channels = layer.out_shape[0]
    shapes = group_shapes(plan, channels, cfg.lanes)
    print(f"seed {seed}: {model.scheme}, lanes {cfg.lanes}, taps {cfg.taps}, layer "
          f"{layer.kind} {layer.in_shape} -> {layer.out_shape}, im2col {image.im2col}, "
          f"groups {shapes}")
    rows = {"taps": image.regions["taps"], "weights": image.regions["weights"],
            "act": input_words(image, x, rng)}
    stall = seed % 3 != 0                   # every third seed: the cycle model's timing
    beats, results, ends, _ = run(
        Harness(cfg, rows), image.descriptors[0], "mac",
        beat_take=(lambda: rng.random() < 0.7) if stall else None,
        result_take=(lambda: rng.random() < 0.5) if stall else None,
        sums=engine_sums(cfg))

    n = plan.area * sum(r for r, _ in shapes)
    assert len(beats) == n and len(ends) == 1
    if not stall:
        assert [c for c, _ in beats] == [1 + ISSUE_LATENCY + k for k in range(n)]
        assert ends == [n]
    want = golden.mac(layer, x.reshape((1,) + tuple(layer.in_shape)))[0].reshape(channels, -1)
    out_layout = map_layout(model, 1)
    assert len(results) == plan.area * len(shapes)
    for k, (_, result) in enumerate(results):
        pos, g = divmod(k, len(shapes))
        first = g * cfg.lanes if g < plan.groups1 else plan.n1 + (g - plan.groups1) * cfg.lanes
        group = result.group
        assert (group.chan, group.two, group.bias) == (first, int(g >= plan.groups1), g), k
        assert (group.addr, group.lane) == where(cfg, out_layout, plan.area, first, pos), k
        valid = shapes[g][1]
        got = [int(result.acc[lane]) for lane in range(valid)]
        assert got == [int(want[plan.order[first + lane], pos]) for lane in range(valid)], (
            f"seed {seed}, position {pos}, group {g}")


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("seed", seeds(2, start=20))
def test_max_pool_layer_windows(flat, seed):
    rng = np.random.default_rng([seed, flat])
    taps = int(rng.integers(1, 6))
    c, h, w = int(rng.integers(1, 7)), 2 * int(rng.integers(1, 4)), 2 * int(rng.integers(1, 4))
    if flat:
        # conv -> max-pool -> dense: the compiler's descriptor
        model = random_model(rng, scheme="int8", act_bits=6, input_shape=(2, h, w),
                             convs=(c,), pool=True, dense=(3,))
        cfg = fit_config(model, lanes=2, taps=taps)
        assert map_layout(model, 2) == "flat"
        row = compile_model(model, cfg).descriptors[1]
    else:
        # A max-pool into a conv layer (grouped output): the descriptor by the
        # compiler's rules (random_model puts a max-pool after the last conv only).
        h, w = int(rng.integers(2, 8)), int(rng.integers(2, 8))
        cfg = AcceleratorConfig(lanes=2, taps=taps, act_depth=c * h * w + taps * 9,
                                max_dim=8)
        groups, oh, ow = -(-c // taps), h // 2, w // 2
        row = pack(descriptor_fields(cfg), dict(
            kind=KIND_POOL, height=oh, width=ow, in_width=w, area=oh * ow, channels=groups,
            n1=c - (groups - 1) * taps, row_skip=2 * w - 2 * ow, chan_skip=(h - 2 * oh) * w))
    groups, area, ow = -(-c // taps), (h // 2) * (w // 2), w // 2
    phases = flat_phases(cfg) if flat else POOL_WINDOW
    want = []
    for g, pos in ((g, pos) for g in range(groups) for pos in range(area)):
        y, xx = divmod(pos, ow)
        addr, lane = divmod(g * taps * area + pos, taps) if flat else (g * area + pos, 0)
        want += [(g * h * w + 2 * y * w + 2 * xx, p, addr, lane, min(taps, c - g * taps))
                 for p in range(phases)]
    print(f"seed {seed}: taps {taps}, map {(c, h, w)}, flat {flat}")
    rows = {"taps": [], "weights": [], "act": []}
    _, _, ends, windows = run(Harness(cfg, rows), row, "pool")
    got = [(wd.base, wd.phase, wd.addr, wd.lane, wd.count) for _, wd in windows]
    assert got == want
    assert [c for c, _ in windows] == list(range(1, len(want) + 1))
    assert ends == [len(want)]
