"""The memory bank: every memory of the accelerator, its ports and their arbitration,
and the readback unit that reads the load regions back through the same ports."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..config import AcceleratorConfig
from ..engines.generator import store_shape
from ..generator_layout import STORES
from ..memories import SinglePortMemory, load_region_port
from ..memory_map import region_depths, region_width
from ..program import (
    PROGRAM_WORD,
    REGIONS,
    act_memory_depth,
    act_words,
    addr_width,
    struct_layout,
    tap_fields,
)
from ..signature import load_layout, readback_signature
from ..spram_choice import spram_memories
from .layouts import (
    act_word_layout,
    bank_mode_layout,
    fill_layout,
    readback_status_layout,
)
from .maxpool import pool_write_layout, window_layout
from .readback import Readback
from .table_build import pool_row_layout
from .writeback import write_layout

__all__ = ["MemoryBank", "read_port_signature", "reader_regions", "region_shapes"]


def region_shapes(cfg: AcceleratorConfig) -> dict:
    """The row shape of each load region the engine has, by name."""
    depths = region_depths(cfg)
    shapes = {
        "program": unsigned(PROGRAM_WORD),
        "taps": struct_layout(tap_fields(cfg), signed=("offset", "dy", "dx")),
        "weights": unsigned(region_width(cfg, "weights")),
        "bias": data.ArrayLayout(signed(cfg.acc_width), cfg.lanes),
        "indices": data.ArrayLayout(unsigned(cfg.index_bits), cfg.lanes),
        "pool": pool_row_layout(cfg),
    }
    if cfg.engine == "insitu":
        shapes.update({f"mlg_{name}": store_shape(cfg, name) for name in STORES})
    return {name: shapes[name] for name in REGIONS if depths[name]}


def reader_regions(cfg: AcceleratorConfig) -> list[str]:
    """The regions another unit reads while running, each through a ``{name}_rd`` port
    of the bank (the pool region is only read back: its rows build the engine's
    table as they are loaded). The in-situ engine's ``weights_rd`` reads its row
    buffer."""
    names = [name for name in region_shapes(cfg) if name != "pool"]
    return names if "weights" in names else names + ["weights"]


def _port_signature(shape, depth: int) -> memory.ReadPort.Signature:
    """The read port of a ``lib.memory.Memory`` of ``depth`` rows of ``shape``."""
    return memory.ReadPort.Signature(addr_width=ceil_log2(depth), shape=shape)


def read_port_signature(cfg: AcceleratorConfig, name: str) -> memory.ReadPort.Signature:
    """The signature of the bank's port ``{name}_rd`` (``name`` one of
    :func:`reader_regions`, or ``"act"`` or ``"out"``), seen from the memory."""
    if name == "act":
        return memory.ReadPort.Signature(addr_width=addr_width(act_words(cfg)),
                                         shape=act_word_layout(cfg))
    if name == "out":
        return _port_signature(signed(cfg.acc_width), cfg.out_depth)
    if name == "weights":
        # the weight region, or the in-situ engine's row buffer: one weight row each
        return _port_signature(unsigned(cfg.lanes * cfg.taps * cfg.code_width),
                               cfg.weight_depth)
    return _port_signature(region_shapes(cfg)[name], region_depths(cfg)[name])


class MemoryBank(wiring.Component):
    """The load regions' memories (program, taps, weights, bias, indices, pool, the
    MLG stores), the two activation buffers, the output memory and the MLG row buffer.

    *Loading.* A row on ``load`` is written into its region (a row is on ``load`` only
    while the accelerator is idle). The program's read port is transparent to it:
    DECODE reads row 0 in the cycle the last input word arrives, when a load may write
    it.

    *Reading.* Each region another unit reads has a read port ``{name}_rd``
    (:func:`reader_regions`), addressed by its user. While a readback request is
    in progress (``readback``, :class:`~.readback.Readback`; taken while
    ``readback_enable``), it addresses every region's port in its addressing cycle
    and holds them (enable low) until its byte is taken; the users see the rows it
    read.

    *Activations.* The two buffers hold words of ``taps`` lanes (``docs/model-format.md``,
    "activation words"), in one memory (:func:`~shiftpool.hw.program.act_memory_depth`:
    the buffer is the top address bit) with one read port and one write port with an
    enable per lane. It reads buffer ``mode.src`` at ``act_rd``'s address
    (``window_addr`` in a max-pool layer, ``mode.pool``) and writes buffer ``1 -
    mode.src``: while
    ``mode.loading`` the input loader's lanes (``fill``, into buffer 0), in a max-pool
    layer the max-pool's words or lanes (``pooled``), else the write-back unit's lanes
    (``results``), which go to the output memory instead in the final layer
    (``mode.last``; at row ``chan``).

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    load : In(stream.Signature(load_layout(config), always_ready=True))
        The load rows the accelerator takes.
    readback : In(readback_signature(config))
        The accelerator's readback port.
    readback_enable : In(1)
        Readback requests may be taken (idle, no input word offered).
    readback_status : Out(readback_status_layout())
        ``latched``: a request addresses the ports in this cycle (no load row can be
        written into a single-port memory then); ``busy``: a request is in progress.
    {name}_rd : Out(memory.ReadPort.Signature(...)) for each of :func:`reader_regions`
        The regions' read ports.
    rows_write : In(StructLayout: valid, addr, data)
        In-situ engine: a row of the MLG row buffer written by the generate phase
        (its one address serves ``weights_rd`` when no row is written).
    act_rd : Out(memory.ReadPort.Signature(addr_width(act_words), act_word_layout))
        The activation buffers' read port.
    window_addr : In(window_layout(config)["base"])
        The address of the max-pool's read beat.
    mode : In(bank_mode_layout())
        ``loading``, ``src``, ``pool``, ``last`` (above).
    fill, results, pooled : In(stream.Signature(..., always_ready=True))
        The activation writes of the input loader (:func:`~.layouts.fill_layout`), the
        write-back unit (:func:`~.writeback.write_layout`) and the max-pool
        (:func:`~.maxpool.pool_write_layout`).
    out_rd : Out(memory.ReadPort.Signature(ceil_log2(out_depth), signed(acc_width)))
        The output memory's read port.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        members = {
            "load": In(stream.Signature(load_layout(config), always_ready=True)),
            "readback": In(readback_signature(config)),
            "readback_enable": In(1),
            "readback_status": Out(readback_status_layout()),
            **{f"{name}_rd": Out(read_port_signature(config, name))
               for name in reader_regions(config)},
        }
        if config.engine == "insitu":
            members["rows_write"] = In(data.StructLayout({
                "valid": 1, "addr": ceil_log2(config.weight_depth),
                "data": unsigned(config.lanes * config.taps * config.code_width)}))
        members.update({
            "act_rd": Out(read_port_signature(config, "act")),
            "window_addr": In(window_layout(config)["base"].shape),
            "mode": In(bank_mode_layout()),
            "fill": In(stream.Signature(fill_layout(config), always_ready=True)),
            "results": In(stream.Signature(write_layout(config), always_ready=True)),
            "pooled": In(stream.Signature(pool_write_layout(config), always_ready=True)),
            "out_rd": Out(read_port_signature(config, "out")),
        })
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        load = self.load
        depths, shapes = region_depths(cfg), region_shapes(cfg)

        # -- the load regions ---------------------------------------------------------
        rd = {}
        in_spram = spram_memories(cfg)
        for name, shape in shapes.items():
            code = REGIONS.index(name)
            if name in in_spram:
                # Written only while idle, read only while running or reading back: one
                # address serves both, so it can go to SPRAM (hw/memories.py,
                # hw/spram_choice.py).
                rd[name] = load_region_port(m, f"{name}_mem", load, code, shape=shape,
                                            depth=depths[name])
                continue
            mem = memory.Memory(shape=shape, depth=depths[name], init=[])
            m.submodules[f"{name}_mem"] = mem
            wp = mem.write_port()
            m.d.comb += [
                wp.addr.eq(load.payload.addr),
                wp.data.eq(load.payload.data),
                wp.en.eq(load.valid & load.ready & (load.payload.region == code)),
            ]
            rd[name] = mem.read_port(transparent_for=(wp,) if name == "program" else ())

        # Each port follows its user, except while a readback request has it.
        m.submodules.readback = rb = Readback(cfg)
        wiring.connect(m, wiring.flipped(self.readback), rb.readback)
        m.d.comb += [
            rb.enable.eq(self.readback_enable),
            self.readback_status.latched.eq(rb.latched),
            self.readback_status.busy.eq(rb.busy),
        ]
        m.d.comb += [rb.rows[name].eq(Value.cast(rd[name].data)) for name in rd]
        for name, port in rd.items():
            if f"{name}_rd" in self.signature.members:
                user = getattr(self, f"{name}_rd")
                m.d.comb += [port.addr.eq(user.addr), port.en.eq(user.en),
                             user.data.eq(port.data)]
        # A request is taken only while the accelerator is idle, and the accelerator
        # stays idle until it is answered: its ports are free.
        with m.If(rb.hold):
            m.d.comb += [port.en.eq(0) for port in rd.values()]
        with m.Elif(rb.read):
            m.d.comb += [port.addr.eq(rb.addr) for port in rd.values()]
            m.d.comb += [port.en.eq(1) for port in rd.values()]

        if cfg.engine == "insitu":
            # MLG: the weight rows of the layer running, made by its generate phase (not
            # a load region). Written only in GENERATE, read only in ISSUE: one address.
            m.submodules.rows_mem = rows_mem = SinglePortMemory(
                shape=self.weights_rd.data.shape(), depth=cfg.weight_depth,
                spram="generated rows" in in_spram)
            write = self.rows_write
            m.d.comb += [
                rows_mem.addr.eq(Mux(write.valid, write.addr, self.weights_rd.addr)),
                rows_mem.wr_en.eq(write.valid), rows_mem.wr_data.eq(write.data),
                rows_mem.rd_en.eq(self.weights_rd.en), self.weights_rd.data.eq(rows_mem.rd_data),
            ]

        # -- activation buffers and the output memory ------------------------------------
        # Both buffers are one memory: a layer reads buffer `src` and writes the other,
        # so one read port and one write port serve both, the buffer being the top
        # address bit (no multiplexer on the read word; the two share their blocks).
        mode = self.mode
        wlayout = act_word_layout(cfg)
        words_w = addr_width(act_words(cfg))
        act_mem = memory.Memory(shape=wlayout, depth=act_memory_depth(cfg), init=[])
        m.submodules.act_mem = act_mem
        act_wp = act_mem.write_port(granularity=1)
        act_rp = act_mem.read_port()
        rd_addr = Signal(words_w)
        m.d.comb += [rd_addr.eq(self.act_rd.addr), act_rp.addr.eq(Cat(rd_addr, mode.src)),
                     act_rp.en.eq(self.act_rd.en), self.act_rd.data.eq(act_rp.data)]
        if cfg.maxpool:
            with m.If(mode.pool):
                m.d.comb += rd_addr.eq(self.window_addr)

        out_mem = memory.Memory(shape=signed(cfg.acc_width), depth=cfg.out_depth, init=[])
        m.submodules.out_mem = out_mem
        out_wp, out_rp = out_mem.write_port(), out_mem.read_port()
        m.d.comb += [out_rp.addr.eq(self.out_rd.addr), out_rp.en.eq(self.out_rd.en),
                     self.out_rd.data.eq(out_rp.data)]

        wr_en = Signal()
        wr_buf = Signal()
        wr_addr = Signal(words_w)
        wr_data = Signal(wlayout)
        wr_lanes = Signal(cfg.taps)
        m.d.comb += wr_buf.eq(~mode.src)
        m.d.comb += [act_wp.addr.eq(Cat(wr_addr, wr_buf)), act_wp.data.eq(wr_data),
                     act_wp.en.eq(Mux(wr_en, wr_lanes, 0))]

        def one_lane(value, lane):
            """``wr_data`` and ``wr_lanes`` writing ``value`` into lane ``lane`` alone."""
            return [wr_data.eq(Cat(*([value] * cfg.taps))),
                    wr_lanes.eq(Const(1, cfg.taps) << lane)]

        results, pooled, fill = self.results, self.pooled, self.fill
        m.d.comb += [out_wp.addr.eq(results.payload.chan), out_wp.data.eq(results.payload.value)]
        # (without `maxpool` no max-pool layer runs: `mode.pool` is never set)
        with m.If(mode.pool & cfg.maxpool):
            m.d.comb += [wr_en.eq(pooled.valid), wr_addr.eq(pooled.payload.addr),
                         wr_data.eq(pooled.payload.data), wr_lanes.eq(pooled.payload.en)]
        with m.Elif(mode.last):
            m.d.comb += out_wp.en.eq(results.valid)
        with m.Else():
            m.d.comb += [wr_en.eq(results.valid), wr_addr.eq(results.payload.addr),
                         wr_data.eq(results.payload.data), wr_lanes.eq(results.payload.en)]
        with m.If(mode.loading):
            m.d.comb += [wr_buf.eq(0), wr_en.eq(fill.valid), wr_addr.eq(fill.payload.addr),
                         *one_lane(fill.payload.act, fill.payload.lane)]
        return m
