"""Benches for single units on cocotb (Icarus, Verilator): the MLG weight generator
with its four stores, and any engine alone.

A unit job (``sim/unit_bench.py``) writes ``load`` payloads, then sends payloads on the
unit's ``i`` stream (seeded idle cycles) while taking ``count`` words from ``o``
(seeded back-pressure); it returns the words and the cycle of every transfer.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from amaranth.hdl import Module
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..hw.config import AcceleratorConfig
from ..hw.engines.common import engine_input_layout, engine_output_layout, make_engine
from ..hw.engines.generator import WeightGenerator, generator_row_layout, store_shape
from ..hw.generator_layout import STORES, request_fields, store_depths, store_widths
from ..hw.program import addr_width, count_width, struct_layout
from .runner import _build_dir, build_design, gateware_digest, run_cocotb

__all__ = ["EngineHarness", "GeneratorHarness", "UnitRun", "load_fields", "load_layout",
           "run_unit"]


def load_fields(cfg: AcceleratorConfig) -> list[tuple[str, int]]:
    """A harness ``load`` beat: one row ``data`` into row ``addr`` of store
    ``STORES[store]`` (pack it with ``hw/program.pack``)."""
    return [("store", count_width(len(STORES) - 1)),
            ("addr", addr_width(max(store_depths(cfg).values()))),
            ("data", max(store_widths(cfg).values()))]


def load_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """The layout of :func:`load_fields`."""
    return struct_layout(load_fields(cfg))


class GeneratorHarness(wiring.Component):
    """The weight generator and its four stores (``mlg_*_depth`` rows), written
    through ``load`` (always ready).

    Members
    -------
    load : In(stream.Signature(load_layout(config)))
    i, o : the generator's request and row streams.
    """

    def __init__(self, config: AcceleratorConfig):
        self._config = config
        self.generator = WeightGenerator(config)
        super().__init__({
            "load": In(stream.Signature(load_layout(config))),
            "i": In(stream.Signature(struct_layout(request_fields(config)))),
            "o": Out(stream.Signature(generator_row_layout(config))),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.generator = gen = self.generator
        wiring.connect(m, wiring.flipped(self.i), gen.i)
        wiring.connect(m, gen.o, wiring.flipped(self.o))
        m.d.comb += self.load.ready.eq(1)
        widths = store_widths(cfg)
        for code, name in enumerate(STORES):
            mem = memory.Memory(shape=store_shape(cfg, name), depth=store_depths(cfg)[name],
                                init=[])
            m.submodules[f"store_{name}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.load.payload.addr),
                         wp.data.eq(self.load.payload.data[:widths[name]]),
                         wp.en.eq(self.load.valid & (self.load.payload.store == code))]
            wiring.connect(m, getattr(gen, f"{name}_rd"), mem.read_port())
        return m


class EngineHarness(wiring.Component):
    """An engine alone, with an empty ``load`` stream so that one bench drives both."""

    def __init__(self, config: AcceleratorConfig):
        self.engine = make_engine(config)
        super().__init__({
            "load": In(stream.Signature(1)),
            "i": In(stream.Signature(engine_input_layout(config))),
            "o": Out(stream.Signature(engine_output_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = self.engine
        wiring.connect(m, wiring.flipped(self.i), self.engine.i)
        wiring.connect(m, self.engine.o, wiring.flipped(self.o))
        m.d.comb += self.load.ready.eq(1)
        return m


UNITS = {"generator": GeneratorHarness, "engine": EngineHarness}


@dataclasses.dataclass
class UnitRun:
    """What a unit job returns: the ``o`` words (raw payload bits), the cycle each
    ``i`` payload and each ``o`` word moved at."""

    outputs: list
    in_cycles: list
    out_cycles: list


def run_unit(unit: str, config: AcceleratorConfig, load: list[int], inputs: list[int],
             count: int, simulator: str, seed: int, idle: float = 0.0, stall: float = 0.0,
             build_dir: Path | None = None, cycle_limit: int = 100_000) -> UnitRun:
    """Build (once per config) and run ``unit`` (``"generator"`` or ``"engine"``) on
    ``simulator``: the ``load`` payloads, then the ``inputs`` on ``i`` with idle cycles
    (probability ``idle``) while ``count`` words are taken from ``o`` with
    back-pressure (``stall``), both seeded by ``seed``."""

    build_dir = _build_dir(build_dir)
    key = f"unit-{unit}-{config.hash}-{gateware_digest()}"
    where = build_design(lambda: UNITS[unit](config), key, "top", simulator, build_dir)
    with tempfile.TemporaryDirectory(prefix="shiftpool-unit-") as tmp:
        job = Path(tmp) / "job.json"
        results = Path(tmp) / "results.json"
        job.write_text(json.dumps({
            "load": [hex(v) for v in load], "inputs": [hex(v) for v in inputs],
            "count": count, "seed": seed, "idle": idle, "stall": stall,
            "limit": cycle_limit, "results": str(results)}))
        run_cocotb(simulator, f"{simulator} unit simulation",
                   test_module="shiftpool.sim.unit_bench", toplevel="top", build_dir=where,
                   test_dir=tmp, env={"SHIFTPOOL_UNIT_JOB": str(job)}, results=results)
        res = json.loads(results.read_text())
    return UnitRun(outputs=[int(v, 16) for v in res["outputs"]], in_cycles=res["in_cycles"],
                   out_cycles=res["out_cycles"])
