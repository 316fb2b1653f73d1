"""The sequencer: the accelerator's state machine, which loads the input, walks the
layer program descriptor by descriptor, and sends the outputs."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig
from ..program import (
    KIND_POOL,
    PROGRAM_WORD,
    act_words,
    addr_width,
    descriptor_words,
    generate_fields,
    lane_width,
)
from ..signature import input_layout, load_layout, output_layout
from .issue import IssueControlSignature
from .layouts import bank_mode_layout, descriptor_layout, fill_layout, readback_status_layout
from .memory_bank import read_port_signature

__all__ = ["Sequencer", "generate_layer_layout"]


def generate_layer_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """The descriptor fields the MLG generate phase reads
    (:class:`~.generate.GeneratePhase`'s ``layer``; ``groups`` is ``groups1``)."""
    desc = descriptor_layout(cfg)
    names = [name for name, _ in generate_fields(cfg)] + ["steps", "groups", "channels"]
    return data.StructLayout({name: desc["groups1" if name == "groups" else name].shape
                              for name in names})


class Sequencer(wiring.Component):
    """The state machine of the layer-program controller.

    IDLE
        Load rows (``load``) are passed to the memory bank (``rows``) and, with the pool
        engine, to the table build (``table``, whose ``ready`` then gates every load
        row and input word). Input values (``inp``) fill the words of buffer 0 lane by
        lane, ``in_lanes`` (layer 0's) lanes a word (``fill``); the value with ``last``
        starts the inference. Readback requests are enabled while no input word is
        offered; while one is in progress no input word is taken, and none after it
        until the program port shows row 0 again (the loader counts layer 0's
        ``in_lanes``, the first field of the descriptor, in row 0); no load row is
        taken in a request's addressing cycle.
    FETCH
        The layer's descriptor is read, its ``P = descriptor_words`` program rows one
        per cycle, into ``layer``: ``P + 1`` cycles (the read port's latency). The
        rows follow on from the last layer's, so one counter addresses them.
    DECODE
        The issue pipeline restarts (``issue.start``) with the descriptor fetched. A
        max-pool layer goes to POOL, an MLG layer to GENERATE, any other to ISSUE.
    GENERATE
        (in-situ engine) Until the generate phase is done.
    ISSUE, POOL
        Until the issue pipeline issues the layer's last beat or window read.
    DRAIN
        When the units are idle (``drained``), the next layer's FETCH, or after the
        final layer OUT_READ.
    OUT_READ, OUT_SEND
        Each output read from the output memory, then offered on ``out``.

    ``cycles`` counts FETCH to DRAIN cycles, from the first FETCH.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    load, inp, out, cycles, busy :
        The accelerator's ports (:class:`~shiftpool.hw.signature.AcceleratorSignature`).
    rows : Out(stream.Signature(load_layout(config), always_ready=True))
        The load rows taken, to the memory bank.
    table : Out(stream.Signature(load_layout(config)))
        Pool engine: the load rows to the table build.
    fill : Out(stream.Signature(fill_layout(config), always_ready=True))
        The input loader's writes.
    readback_enable : Out(1)
    readback_status : In(readback_status_layout())
        The memory bank's readback unit.
    program_rd, out_rd : In(memory bank's read port signatures)
    mode : Out(bank_mode_layout())
        The memory bank's activation ports' mode.
    layer : Out(descriptor_layout(config))
        The running layer's descriptor (from DECODE on; it changes in FETCH).
    issue : Out(IssueControlSignature(config))
        The issue pipeline.
    drained : In(1)
        Nothing the layer started is left after this cycle (the issue pipeline, the
        write-back unit and the max-pool idle).
    generate : Out(Signature(start, layer, done))
        In-situ engine: the generate phase's ``start`` (the MLG layer's DECODE),
        ``layer`` (the running layer's fields) and ``done``.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        members = {
            "load": In(stream.Signature(load_layout(config))),
            "inp": In(stream.Signature(input_layout(config))),
            "out": Out(stream.Signature(output_layout(config))),
            "cycles": Out(config.cycle_bits),
            "busy": Out(1),
            "rows": Out(stream.Signature(load_layout(config), always_ready=True)),
            "fill": Out(stream.Signature(fill_layout(config), always_ready=True)),
            "readback_enable": Out(1),
            "readback_status": In(readback_status_layout()),
            "program_rd": In(read_port_signature(config, "program")),
            "out_rd": In(read_port_signature(config, "out")),
            "mode": Out(bank_mode_layout()),
            "layer": Out(descriptor_layout(config)),
            "issue": Out(IssueControlSignature(config)),
            "drained": In(1),
        }
        if config.engine == "pool":
            members["table"] = Out(stream.Signature(load_layout(config)))
        if config.engine == "insitu":
            members["generate"] = Out(wiring.Signature({
                "start": Out(1), "layer": Out(generate_layer_layout(config)),
                "done": In(1)}))
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        lookup = cfg.engine == "pool"
        insitu = cfg.engine == "insitu"
        d = self.layer
        program = self.program_rd
        status = self.readback_status
        load, inp, out = self.load, self.inp, self.out

        words = descriptor_words(cfg)
        # The descriptor being fetched, a program row a cycle (the first lowest): the
        # running layer is its low bits.
        fetched = Signal(words * PROGRAM_WORD)
        m.d.comb += d.eq(fetched[:len(Value.cast(d))])
        word_addr = Signal(range(cfg.program_depth * words + 1))
        fetch_k = Signal(range(words + 1))
        in_addr = Signal(addr_width(act_words(cfg)))
        in_lane = Signal(lane_width(cfg))
        cycles = Signal(cfg.cycle_bits)
        out_idx = Signal(range(cfg.out_depth + 1))
        # The output being sent is the last: a register kept beside `out_idx`, so that
        # no compare sits between it and the link's handler state.
        out_last = Signal()
        counting = Signal()
        # Driven by the state machine, outside the structs it goes into (the Icarus
        # quirk in hw/controller/issue.py).
        loading = Signal()
        with m.If(counting):
            m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += [self.cycles.eq(cycles), self.out_rd.addr.eq(out_idx),
                     out.payload.data.eq(self.out_rd.data),
                     out.payload.last.eq(out_last),
                     self.issue.next.eq(d),
                     self.mode.src.eq(d.src),
                     self.mode.pool.eq((d.kind == KIND_POOL) & cfg.maxpool),
                     self.mode.last.eq(d.last), self.mode.loading.eq(loading),
                     self.fill.payload.addr.eq(in_addr), self.fill.payload.lane.eq(in_lane),
                     self.fill.payload.act.eq(inp.payload.data),
                     self.rows.valid.eq(load.valid & load.ready),
                     self.rows.payload.eq(load.payload)]
        if lookup:
            m.d.comb += self.table.payload.eq(load.payload)
        if insitu:
            gen = self.generate

            # The generate phase's layer fields, of the running layer.
            m.d.comb += [getattr(gen.layer, name).eq(getattr(d, name))
                         for name in gen.layer.shape().members if name != "groups"]
            m.d.comb += gen.layer.groups.eq(d.groups1)

        # The program port shows row 0 in this cycle: it read row 0 in the last one (an
        # idle cycle with no readback on the ports). Input words wait for it, since
        # the loader counts lanes by layer 0's `in_lanes`, the low bits of row 0.
        row0 = Signal()
        m.d.sync += row0.eq(0)
        field = descriptor_layout(cfg)["in_lanes"]
        assert field.offset + field.width <= PROGRAM_WORD      # in the first program row
        first_in_lanes = program.data[field.offset:field.offset + field.width]
        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += row0.eq(~status.busy)
                m.d.comb += [load.ready.eq(~status.latched),
                             inp.ready.eq(~status.busy & row0), program.addr.eq(0),
                             loading.eq(1)]
                if lookup:
                    # Nothing else is taken while a pool row builds its table column.
                    m.d.comb += [
                        self.table.valid.eq(load.valid),
                        load.ready.eq(~status.latched & self.table.ready),
                        inp.ready.eq(~status.busy & row0 & self.table.ready),
                    ]
                m.d.comb += self.readback_enable.eq(~inp.valid)
                # Input values fill the words of buffer 0 lane by lane, `in_lanes` lanes
                # a word.
                take_input = inp.valid & inp.ready
                m.d.comb += self.fill.valid.eq(take_input)
                with m.If(take_input):
                    m.d.sync += in_lane.eq(in_lane + 1)
                    with m.If(in_lane + 1 == first_in_lanes):
                        m.d.sync += [in_lane.eq(0), in_addr.eq(in_addr + 1)]
                    with m.If(inp.payload.last):
                        m.d.sync += [in_addr.eq(0), in_lane.eq(0), word_addr.eq(0),
                                     cycles.eq(0)]
                        m.next = "FETCH"
            with m.State("FETCH"):
                # Row `word_addr` is read in this cycle, the one before is on the port.
                m.d.comb += [counting.eq(1), self.busy.eq(1), program.addr.eq(word_addr)]
                m.d.sync += fetch_k.eq(fetch_k + 1)
                with m.If(fetch_k != words):
                    m.d.sync += word_addr.eq(word_addr + 1)
                with m.If(fetch_k != 0):
                    m.d.sync += fetched.eq(Cat(fetched[PROGRAM_WORD:], program.data))
                with m.If(fetch_k == words):
                    m.d.sync += fetch_k.eq(0)
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += [counting.eq(1), self.busy.eq(1), self.issue.start.eq(1)]
                # (a config without `maxpool` has no POOL state and no max-pool layer)
                with m.If((d.kind == KIND_POOL) & cfg.maxpool):
                    if cfg.maxpool:
                        m.next = "POOL"
                with m.Else():
                    m.next = "ISSUE"
                    if insitu:
                        # The layer's weight rows are generated first.
                        m.d.comb += gen.start.eq(1)
                        m.next = "GENERATE"
            if insitu:
                with m.State("GENERATE"):
                    m.d.comb += [counting.eq(1), self.busy.eq(1)]
                    with m.If(gen.done):
                        m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += [counting.eq(1), self.busy.eq(1), self.issue.mac.eq(1)]
                with m.If(self.issue.end):
                    m.next = "DRAIN"
            if cfg.maxpool:
                with m.State("POOL"):
                    m.d.comb += [counting.eq(1), self.busy.eq(1), self.issue.pool.eq(1)]
                    with m.If(self.issue.end):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                with m.If(self.drained):
                    with m.If(d.last):
                        m.d.sync += [out_idx.eq(0), out_last.eq(d.channels == 1)]
                        m.next = "OUT_READ"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("OUT_READ"):
                m.d.comb += self.busy.eq(1)
                m.next = "OUT_SEND"
            with m.State("OUT_SEND"):
                m.d.comb += [self.busy.eq(1), out.valid.eq(1)]
                with m.If(out.ready):
                    m.d.sync += [out_idx.eq(out_idx + 1), out_last.eq(out_idx + 2 == d.channels)]
                    with m.If(out_last):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "OUT_READ"
        return m
