"""The accelerator: memories, the layer-program controller and one engine.

The controller runs the layer program that :mod:`shiftpool.sw.compile` produces.
Timing (which :mod:`shiftpool.sw.cycles` predicts exactly):

* every layer starts with two cycles (FETCH, DECODE);
* a MAC layer, at each output position, runs its lane groups one after the other:
  ``rows`` issue cycles (``steps`` per pass), three cycles for the memory and engine
  pipeline to drain, then ``lanes`` write-back cycles (bias, requantize, write);
* a max-pool layer takes five cycles per output (four reads, one write).

The cycle counter covers the program from the first FETCH to the last write-back.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .engines.common import make_engine
from .program import (
    KIND_POOL, REGIONS, addr_width, count_width, descriptor_fields, struct_layout, tap_fields,
)
from .requantizer import requantize

__all__ = ["Accelerator", "load_layout", "region_width"]


def region_width(config: AcceleratorConfig, region: str) -> int:
    """Bits in one row of a load region."""
    from ..sw.compile import region_widths

    return region_widths(config)[region]


def load_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of the load stream: which region, which row, the row's bits."""
    depths = (config.program_depth, config.tap_depth, config.weight_depth, config.bias_depth)
    return data.StructLayout({
        "region": unsigned(count_width(len(REGIONS) - 1)),
        "addr": unsigned(addr_width(max(depths))),
        "data": unsigned(max(region_width(config, r) for r in REGIONS)),
    })


class Accelerator(wiring.Component):
    """A whole accelerator for one configuration.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    load : In(stream.Signature(load_layout(config)))
        Writes one row of a region (program, taps, weights, bias); accepted while idle.
    inp : In(stream.Signature(StructLayout({"data": unsigned(act_bits), "last": 1})))
        The input feature map, ``C*H*W`` words in CHW order; the word with ``last``
        starts the inference. Accepted while idle.
    out : Out(stream.Signature(StructLayout({"data": signed(acc_width), "last": 1})))
        The final layer's outputs (accumulator plus bias), in channel order.
    cycles : Out(cycle_bits)
        Cycles the last inference's program took; valid while ``busy`` is low.
    busy : Out(1)
        An inference is running or its outputs are being sent.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__({
            "load": In(stream.Signature(load_layout(config))),
            "inp": In(stream.Signature(data.StructLayout({
                "data": unsigned(config.act_bits), "last": 1}))),
            "out": Out(stream.Signature(data.StructLayout({
                "data": signed(config.acc_width), "last": 1}))),
            "cycles": Out(config.cycle_bits),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.engine = engine = make_engine(cfg)

        # -- memories -----------------------------------------------------------------
        dlayout = struct_layout(descriptor_fields(cfg))
        tfields = tap_fields(cfg)
        tlayout = data.ArrayLayout(struct_layout(tfields, signed=("offset", "dy", "dx")),
                                   cfg.taps)
        blayout = data.ArrayLayout(signed(cfg.acc_width), cfg.lanes)
        shapes = {
            "program": dlayout, "taps": tlayout,
            "weights": unsigned(region_width(cfg, "weights")), "bias": blayout,
        }
        depths = {"program": cfg.program_depth, "taps": cfg.tap_depth,
                  "weights": cfg.weight_depth, "bias": cfg.bias_depth}
        rd = {}
        for code, name in enumerate(REGIONS):
            mem = memory.Memory(shape=shapes[name], depth=depths[name], init=[])
            m.submodules[f"{name}_mem"] = mem
            wp = mem.write_port()
            m.d.comb += [
                wp.addr.eq(self.load.payload.addr),
                wp.data.eq(self.load.payload.data),
                wp.en.eq(self.load.valid & self.load.ready & (self.load.payload.region == code)),
            ]
            rd[name] = mem.read_port()
        bufs = []
        for b in range(2):
            mem = memory.Memory(shape=unsigned(cfg.act_bits), depth=cfg.act_depth, init=[])
            m.submodules[f"act{b}_mem"] = mem
            bufs.append((mem.write_port(), [mem.read_port() for _ in range(cfg.taps)]))
        out_mem = memory.Memory(shape=signed(cfg.acc_width), depth=cfg.out_depth, init=[])
        m.submodules.out_mem = out_mem
        out_wp, out_rp = out_mem.write_port(), out_mem.read_port()

        # -- controller state ------------------------------------------------------------
        aw = addr_width(cfg.act_depth)
        d = Signal(dlayout)                          # current layer descriptor
        layer = Signal(range(cfg.program_depth))
        y = Signal(range(cfg.max_dim + 1))
        x = Signal(range(cfg.max_dim + 1))
        pos = Signal(range(cfg.act_depth + 1))       # y*width + x
        group = Signal(count_width(2 * cfg.act_depth))
        step = Signal(count_width(cfg.tap_depth))
        second = Signal()                            # issuing the second pass
        wrow = Signal(addr_width(cfg.weight_depth))
        brow = Signal(addr_width(cfg.bias_depth))
        chan = Signal(count_width(cfg.act_depth))    # channel of lane 0 in this group
        lane = Signal(range(cfg.lanes))
        wb_addr = Signal(count_width(cfg.act_depth))
        in_addr = Signal(aw)
        cycles = Signal(cfg.cycle_bits)
        out_idx = Signal(range(cfg.out_depth + 1))
        # max-pool
        pc = Signal(count_width(cfg.act_depth))
        in_base = Signal(count_width(cfg.act_depth + 2 * cfg.max_dim + 2))
        pool_k = Signal(range(4))
        pool_max = Signal(unsigned(cfg.act_bits))
        pool_addr = Signal(aw + 1)

        src = d.src
        act_rdata = [Mux(src, bufs[1][1][j].data, bufs[0][1][j].data) for j in range(cfg.taps)]

        # Issue pipeline: stage 1 has tap and weight rows, stage 2 the activations.
        s1 = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1}))
        s2 = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1}))
        s2_codes = Signal(len(rd["weights"].data))
        s2_tap_ok = Signal(cfg.taps)
        issue = Signal()
        issue_first = Signal()
        issue_last = Signal()
        m.d.sync += [
            s1.valid.eq(issue), s1.first.eq(issue_first), s1.last.eq(issue_last),
            s2.eq(s1), s2_codes.eq(rd["weights"].data),
        ]
        rows_left_pass = step + 1 == d.steps
        m.d.comb += [
            rd["program"].addr.eq(layer),
            rd["taps"].addr.eq(d.tap_base + step),
            rd["weights"].addr.eq(wrow),
            rd["bias"].addr.eq(brow),
        ]
        tap_ok = []
        for j in range(cfg.taps):
            entry = rd["taps"].data[j]
            ty = (y + entry.dy).as_signed()
            tx = (x + entry.dx).as_signed()
            ok = entry.valid & (ty >= 0) & (ty < d.height) & (tx >= 0) & (tx < d.width)
            tap_ok.append(ok)
            addr = Signal(aw, name=f"tap{j}_addr")
            m.d.comb += addr.eq(pos + entry.offset)
            for b in range(2):
                m.d.comb += bufs[b][1][j].addr.eq(addr)
        m.d.sync += s2_tap_ok.eq(Cat(*tap_ok))
        with m.If(d.kind == KIND_POOL):    # read port 0 doubles as the max-pool reader
            for b in range(2):
                m.d.comb += bufs[b][1][0].addr.eq(pool_addr)

        m.d.comb += [
            engine.i.valid.eq(s2.valid),
            engine.i.payload.first.eq(s2.first),
            engine.i.payload.last.eq(s2.last),
            engine.i.payload.codes.eq(s2_codes),
        ]
        for j in range(cfg.taps):
            m.d.comb += engine.i.payload.acts[j].eq(Mux(s2_tap_ok[j], act_rdata[j], 0))

        # Write-back: one lane per cycle.
        value = Signal(signed(cfg.acc_width))
        m.d.comb += value.eq(engine.o.payload[lane] + rd["bias"].data[lane])
        act_value = requantize(m, value, d.shift, cfg.act_bits)
        limit = Mux(group < d.groups1, d.n1, d.channels)
        lane_ok = chan + lane < limit
        wr_en = Signal()
        wr_addr = Signal(aw)
        wr_data = Signal(unsigned(cfg.act_bits))
        for b in range(2):
            wp = bufs[b][0]
            m.d.comb += [wp.addr.eq(wr_addr), wp.data.eq(wr_data)]
        m.d.comb += out_wp.addr.eq(chan + lane)
        m.d.comb += out_wp.data.eq(value)
        m.d.comb += out_rp.addr.eq(out_idx)

        groups = d.groups1 + d.groups2
        counting = Signal()
        with m.If(counting):
            m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += self.cycles.eq(cycles)

        def next_layer():
            with m.If(d.last):
                m.d.sync += out_idx.eq(0)
                m.next = "OUT_READ"
            with m.Else():
                m.d.sync += layer.eq(layer + 1)
                m.next = "FETCH"

        def start_position(p):
            m.d.sync += [group.eq(0), step.eq(0), second.eq(0), chan.eq(0), wb_addr.eq(p),
                         wrow.eq(d.weight_base), brow.eq(d.bias_base)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.load.ready.eq(1), self.inp.ready.eq(1)]
                m.d.comb += [bufs[0][0].en.eq(self.inp.valid), wr_addr.eq(in_addr),
                             wr_data.eq(self.inp.payload.data)]
                with m.If(self.inp.valid):
                    m.d.sync += in_addr.eq(in_addr + 1)
                    with m.If(self.inp.payload.last):
                        m.d.sync += [in_addr.eq(0), layer.eq(0), cycles.eq(0)]
                        m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                desc = rd["program"].data
                m.d.sync += [d.eq(desc), y.eq(0), x.eq(0), pos.eq(0)]
                m.d.sync += [group.eq(0), step.eq(0), second.eq(0), chan.eq(0), wb_addr.eq(0),
                             wrow.eq(desc.weight_base), brow.eq(desc.bias_base)]
                m.d.sync += [pc.eq(0), in_base.eq(0), pool_k.eq(0)]
                with m.If(desc.kind == KIND_POOL):
                    m.next = "POOL_READ"
                with m.Else():
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                is_two = group >= d.groups1
                m.d.comb += [issue.eq(1), issue_first.eq((step == 0) & ~second),
                             issue_last.eq(rows_left_pass & (second | ~is_two))]
                m.d.sync += [step.eq(step + 1), wrow.eq(wrow + 1)]
                with m.If(rows_left_pass):
                    m.d.sync += step.eq(0)
                    with m.If(is_two & ~second):
                        m.d.sync += second.eq(1)
                    with m.Else():
                        m.d.sync += second.eq(0)
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                with m.If(engine.o.valid):
                    m.d.sync += lane.eq(0)
                    m.next = "WRITEBACK"
            with m.State("WRITEBACK"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                with m.If(d.last):
                    m.d.comb += out_wp.en.eq(lane_ok)
                with m.Else():
                    m.d.comb += [wr_en.eq(lane_ok), wr_addr.eq(wb_addr), wr_data.eq(act_value)]
                    with m.If(lane_ok):
                        m.d.sync += wb_addr.eq(wb_addr + d.area)
                m.d.sync += lane.eq(lane + 1)
                with m.If(lane == cfg.lanes - 1):
                    m.d.comb += engine.o.ready.eq(1)
                    m.d.sync += [lane.eq(0), group.eq(group + 1), brow.eq(brow + 1),
                                 chan.eq(chan + cfg.lanes)]
                    m.next = "ISSUE"
                    with m.If(group + 1 == d.groups1):
                        m.d.sync += [chan.eq(d.n1), wb_addr.eq(d.n1_addr + pos)]
                    with m.If(group + 1 == groups):
                        # next output position
                        with m.If(x + 1 == d.width):
                            m.d.sync += [x.eq(0), y.eq(y + 1)]
                            with m.If(y + 1 == d.height):
                                next_layer()
                        with m.Else():
                            m.d.sync += x.eq(x + 1)
                        m.d.sync += pos.eq(pos + 1)
                        start_position(pos + 1)
            with m.State("POOL_READ"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                # reads in_base + {0, 1, in_width, in_width + 1}
                m.d.comb += pool_addr.eq(in_base + Mux(pool_k[1], d.in_width, 0) + pool_k[0])
                with m.If(pool_k == 1):
                    m.d.sync += pool_max.eq(act_rdata[0])
                with m.Elif(pool_k != 0):
                    m.d.sync += pool_max.eq(Mux(act_rdata[0] > pool_max, act_rdata[0], pool_max))
                m.d.sync += pool_k.eq(pool_k + 1)
                with m.If(pool_k == 3):
                    m.next = "POOL_WRITE"
            with m.State("POOL_WRITE"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                m.d.comb += [wr_en.eq(1), wr_addr.eq(wb_addr),
                             wr_data.eq(Mux(act_rdata[0] > pool_max, act_rdata[0], pool_max))]
                m.d.sync += [wb_addr.eq(wb_addr + 1), in_base.eq(in_base + 2)]
                m.next = "POOL_READ"
                with m.If(x + 1 == d.width):
                    m.d.sync += [x.eq(0), y.eq(y + 1), in_base.eq(in_base + 2 + d.row_skip)]
                    with m.If(y + 1 == d.height):
                        m.d.sync += [y.eq(0), pc.eq(pc + 1),
                                     in_base.eq(in_base + 2 + d.row_skip + d.chan_skip)]
                        with m.If(pc + 1 == d.channels):
                            next_layer()
                with m.Else():
                    m.d.sync += x.eq(x + 1)
            with m.State("OUT_READ"):
                m.d.comb += self.busy.eq(1)
                m.next = "OUT_SEND"
            with m.State("OUT_SEND"):
                m.d.comb += [self.busy.eq(1), self.out.valid.eq(1),
                             self.out.payload.data.eq(out_rp.data),
                             self.out.payload.last.eq(out_idx + 1 == d.channels)]
                with m.If(self.out.ready):
                    m.d.sync += out_idx.eq(out_idx + 1)
                    with m.If(out_idx + 1 == d.channels):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "OUT_READ"

        dst_is_1 = ~src
        m.d.comb += [
            bufs[1][0].en.eq(wr_en & dst_is_1),
        ]
        with m.If(~self.inp.ready):
            m.d.comb += bufs[0][0].en.eq(wr_en & ~dst_is_1)
        return m
