"""The accelerator: memories, the layer-program controller and one engine.

The controller's units are components of :mod:`shiftpool.hw.controller` (write-back,
max-pool, readback, the pool engine's table build); this module holds the memories,
the issue pipeline and the sequencer that walks the layer program, and connects them.

The controller runs the layer program that :mod:`shiftpool.sw.compile.image` produces.
Cycle 0 of a layer is its DECODE (the descriptor is read while the previous layer
drains, or while the last input word is accepted). Timing, which
:mod:`shiftpool.sw.compile.cycles` predicts exactly:

* **MAC layer.** From cycle 1 the issue stage offers one beat (one weight row) per
  cycle, in the order position, lane group, pass, step, with no gap between groups
  or positions. A beat reads its tap row and weight row (stage 1), then its
  activations (stage 2); stage 3 registers both, and the beat enters the engine
  three cycles after it was issued. A pipelined engine (the shift-add and binary
  engines: ``S = hw/program.engine_stages(config)`` register stages, which move only
  when the engine takes a beat) adds ``S`` cycles before the beat reaches its
  accumulators; read ``4 + S`` for ``4`` below. When the engine presents a group's result, the
  write-back unit captures all lanes in one cycle and then writes the group's valid
  lanes in ``W_j`` writes, one per cycle, while the engine goes on with the next
  group: one lane per write (``W_j = V_j`` valid lanes), or with ``writeback =
  "word"`` in a hidden layer whose next channel is the next lane, all the lanes that
  go to one activation word (``W_j`` = the words they touch). A result the
  write-back unit cannot take yet stays in the engine, whose input then stalls, and
  the whole issue pipeline freezes with it. So group ``j`` of the layer (counted
  over all positions), with ``R_j`` beats, is captured at ``c_0 = 4 + R_0``, ``c_j
  = c_{j-1} + max(R_j, W_{j-1})``, and written in cycles ``c_j + 3 .. c_j + W_j +
  2`` (selected two cycles earlier, written from registers; the pool engine:
  ``sw/compile/cycles.py``).
* **Max-pool layer.** From cycle 1, the source buffer's one read port reads each
  2x2 window's four words in four cycles; a grouped output's word of maxima is
  written one cycle after the last read, a flat output's channels one per cycle
  (``sw/compile/cycles.py``).
* A layer ends in the cycle of its last write; the next layer's DECODE is the cycle
  after. The cycle counter covers the program from the first DECODE to the last
  write of the final layer.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, wiring

from .config import AcceleratorConfig
from .controller.generate import GeneratePhase
from .controller.layouts import beat_layout, descriptor_layout, group_layout, word_add
from .controller.maxpool import MaxPool, act_word_layout
from .controller.readback import Readback
from .controller.table_build import TableBuild, pool_row_layout
from .controller.writeback import WriteBack
from .engines.common import make_engine
from .engines.generator import store_shape
from .generator_layout import STORES
from .memories import SinglePortMemory, load_region_port
from .memory_map import region_depths, region_width
from .program import (
    KIND_POOL,
    REGIONS,
    act_words,
    addr_width,
    channel_limit,
    count_width,
    engine_stages,
    flat_phases,
    lane_width,
    pool_phases,
    round_width,
    struct_layout,
    tap_fields,
)
from .signature import AcceleratorSignature, load_layout

__all__ = [
    "Accelerator", "beat_layout", "group_layout", "load_layout", "pool_phases", "region_width",
]


class Accelerator(wiring.Component):
    """A whole accelerator for one configuration.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    The members of :class:`~shiftpool.hw.signature.AcceleratorSignature`:

    load : In(stream.Signature(load_layout(config)))
        Writes one row of a region (program, taps, weights, bias); accepted while idle.
    inp : In(stream.Signature(input_layout(config)))
        The input feature map, ``C*H*W`` words in CHW order; the word with ``last``
        starts the inference. Accepted while idle.
    out : Out(stream.Signature(output_layout(config)))
        The final layer's outputs (accumulator plus bias), in channel order.
    cycles : Out(cycle_bits)
        Cycles the last inference's program took, from its first layer's DECODE to
        the final layer's last write (the schedule is in the module docstring and
        :mod:`shiftpool.sw.compile.cycles`); valid while ``busy`` is low.
    busy : Out(1)
        An inference is running or its outputs are being sent.
    readback : In(readback_signature(config))
        Reads rows of the load regions back (``docs/protocol.md`` §6): a request
        (``region``, ``addr``) is taken while idle and no input word is offered; its
        row, zero-extended to the widest region, is offered on ``resp`` from the second
        cycle after and held until taken. One request is answered at a time; input
        words wait while one is in progress.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__(AcceleratorSignature(config))

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.engine = engine = make_engine(cfg)
        words = act_words(cfg)
        aw = addr_width(words)
        lw = lane_width(cfg)
        wlayout = act_word_layout(cfg)
        lookup = cfg.engine == "pool"
        insitu = cfg.engine == "insitu"

        # -- memories -----------------------------------------------------------------
        dlayout = descriptor_layout(cfg)
        tlayout = struct_layout(tap_fields(cfg), signed=("offset", "dy", "dx"))
        shapes = {
            "program": dlayout, "taps": tlayout,
            "weights": unsigned(region_width(cfg, "weights")),
            "bias": data.ArrayLayout(signed(cfg.acc_width), cfg.lanes),
            "indices": data.ArrayLayout(unsigned(cfg.index_bits), cfg.lanes),
            "pool": pool_row_layout(cfg),
        }
        if insitu:
            shapes.update({f"mlg_{name}": store_shape(cfg, name) for name in STORES})
        depths = region_depths(cfg)
        # The regions this engine has, with their codes.
        regions = [(code, name) for code, name in enumerate(REGIONS) if depths[name]]
        rd = {}
        for code, name in regions:
            if name == "weights":
                # Written only while idle, read only while running or reading back: one
                # address serves both, so it can go to SPRAM (hw/memories.py).
                rd[name] = load_region_port(m, f"{name}_mem", self.load, code,
                                            shape=shapes[name], depth=depths[name])
                continue
            mem = memory.Memory(shape=shapes[name], depth=depths[name], init=[])
            m.submodules[f"{name}_mem"] = mem
            wp = mem.write_port()
            m.d.comb += [
                wp.addr.eq(self.load.payload.addr),
                wp.data.eq(self.load.payload.data),
                wp.en.eq(self.load.valid & self.load.ready & (self.load.payload.region == code)),
            ]
            # The program is read in the cycle the last input word arrives, when a load
            # may write the same row: that read must see the new row.
            rd[name] = mem.read_port(transparent_for=(wp,) if name == "program" else ())
        if insitu:
            # MLG: the weight rows of the layer running, made by its generate phase (not
            # a load region). Written only in GENERATE, read only in ISSUE: one address.
            m.submodules.rows_mem = rows_mem = SinglePortMemory(
                shape=unsigned(cfg.lanes * cfg.taps * cfg.code_width), depth=cfg.weight_depth)
            weights_rd = memory.ReadPort.Signature(addr_width=len(rows_mem.addr),
                                                   shape=rows_mem.shape).create()
            m.d.comb += [rows_mem.rd_en.eq(weights_rd.en), weights_rd.data.eq(rows_mem.rd_data)]
        else:
            weights_rd = rd["weights"]
        # Each activation buffer holds words of `taps` lanes (docs/model-format.md,
        # "activation words"): one read port (a block RAM copy each), one write port
        # with an enable per lane.
        act_wp, act_rp = [], []
        for b in range(2):
            mem = memory.Memory(shape=wlayout, depth=words, init=[])
            m.submodules[f"act{b}_mem"] = mem
            act_wp.append(mem.write_port(granularity=1))
            act_rp.append(mem.read_port())
        out_mem = memory.Memory(shape=signed(cfg.acc_width), depth=cfg.out_depth, init=[])
        m.submodules.out_mem = out_mem
        out_wp, out_rp = out_mem.write_port(), out_mem.read_port()

        d = Signal(dlayout)                          # current layer descriptor
        act_rdata = Signal(wlayout)
        m.d.comb += act_rdata.eq(Mux(d.src, act_rp[1].data, act_rp[0].data))

        # One write port per activation buffer, shared by the input loader (buffer 0,
        # while idle), the write-back unit and the max-pool (the buffer not read); the
        # loader writes one lane, the other two one lane or several lanes of a word.
        wr_en = Signal()
        wr_buf = Signal()
        wr_addr = Signal(aw)
        wr_data = Signal(wlayout)
        wr_lanes = Signal(cfg.taps)
        m.d.comb += wr_buf.eq(~d.src)
        for b in range(2):
            m.d.comb += [act_wp[b].addr.eq(wr_addr), act_wp[b].data.eq(wr_data),
                         act_wp[b].en.eq(Mux(wr_en & (wr_buf == b), wr_lanes, 0))]

        def one_lane(value, lane):
            """``wr_data`` and ``wr_lanes`` writing ``value`` into lane ``lane`` alone."""
            return [wr_data.eq(Cat(*([value] * cfg.taps))),
                    wr_lanes.eq(Const(1, cfg.taps) << lane)]

        # -- MAC issue pipeline ------------------------------------------------------------
        # Issue stage (counters) -> stage 1 (tap and weight rows arrive) -> stage 2
        # (activations arrive; the beat is offered to the engine). Every register and
        # read port moves only on `advance`, so a beat the engine refuses freezes the
        # whole pipeline with its data intact.
        blayout = beat_layout(cfg)
        # The issue stage's beat, built from the counters below. Its valid bit is the
        # separate `issuing`: a struct driven partly by plain assignments and partly
        # by the FSM becomes per-slice `always @*` blocks in Verilog that Icarus never
        # evaluates at time 0 (they would stay X until a counter changes).
        issue = Signal(blayout)
        issuing = Signal()
        s1 = Signal(blayout)
        s2 = Signal(blayout)
        s2_lanes = Signal(cfg.taps)
        s3 = Signal(blayout)
        s3_acts = Signal(data.ArrayLayout(unsigned(cfg.act_bits), cfg.taps))
        advance = Signal()
        m.d.comb += advance.eq(~s3.valid | engine.i.ready)

        y = Signal.like(issue.y)
        x = Signal.like(issue.x)
        pos = Signal.like(issue.pos)
        wrow = Signal.like(issue.wrow)
        brow = Signal.like(issue.group.bias)
        chan = Signal.like(issue.group.chan)
        # Where lane 0 of the current group's outputs goes: the position's word and lane
        # (pos_w, pos_l) plus the group's offset from it (grp_w, grp_l), which passes
        # the map by at most a group's worth before it restarts.
        pos_w = Signal(aw)
        pos_l = Signal(lw)
        grp_w = Signal(range(2 * cfg.lanes * words + 2))
        grp_l = Signal(lw)
        out_w, out_l = word_add(cfg, pos_w, pos_l, grp_w, grp_l, d.carry)
        # up to groups1 + groups2, two descriptor fields of count_width(group_limit) bits
        group = Signal(count_width(2 * ((1 << len(d.groups1)) - 1)))
        step = Signal(count_width(cfg.tap_depth))
        second = Signal()                            # issuing a group's second pass
        # The group is a two-pass one (group >= groups1): a register, set when the
        # group counter passes groups1_last and at the start of a position whose
        # first group is two-pass, so no magnitude compare sits in the loop's ends.
        is_two = Signal()
        # The last value of each loop counter, registered at DECODE, so that the loop
        # ends are plain compares (they fan out to every counter's enable). -1 when
        # the loop is empty: an unsigned counter never equals it.
        steps_last = Signal(signed(len(d.steps) + 1))
        groups_last = Signal(signed(len(d.groups1) + 2))
        groups1_last = Signal(signed(len(d.groups1) + 1))
        width_last = Signal(signed(len(d.width) + 1))
        height_last = Signal(signed(len(d.height) + 1))
        pass_end = step == steps_last
        # RBNN rounds (binary engine): the round of the issued step, and the step within
        # it; every `round_steps` steps the weight rows restart with the next round.
        rbnn = cfg.engine == "binary"
        if rbnn:
            rnd = Signal(round_width(cfg))
            rstep = Signal.like(step)
            round_last = Signal(signed(len(d.round_steps) + 1))
            round_end = rstep == round_last
        # Precompute mode: each position starts with fill_groups fill groups of `steps`
        # beats that store the pool's dot products for the step's 8 inputs; they
        # produce no result, read no weight row and are not counted in `group`.
        filling = Signal()
        fill_row = Signal(range(max(2, cfg.fill_rows))) if cfg.precompute else None
        group_end = pass_end & (second | ~is_two) & ~filling
        pos_end = group_end & (group == groups_last)
        row_end = pos_end & (x == width_last)
        layer_end = row_end & (y == height_last)
        m.d.comb += [
            issue.first.eq((step == 0) & ~second),
            issue.last.eq(group_end),
            issue.y.eq(y), issue.x.eq(x), issue.pos.eq(pos), issue.wrow.eq(wrow),
            issue.group.chan.eq(chan), issue.group.two.eq(is_two),
            issue.group.bias.eq(brow), issue.group.addr.eq(out_w), issue.group.lane.eq(out_l),
        ]
        if cfg.precompute:
            m.d.comb += [issue.fill.eq(filling), issue.step.eq(step),
                         issue.fill_row.eq(fill_row)]
        if rbnn:
            m.d.comb += issue.round.eq(rnd)

        m.d.comb += [
            rd["taps"].addr.eq(d.tap_base + step), rd["taps"].en.eq(advance),
            weights_rd.addr.eq(s1.wrow), weights_rd.en.eq(advance),
        ]
        if lookup:
            m.d.comb += [rd["indices"].addr.eq(s1.wrow), rd["indices"].en.eq(advance)]
        # The weight row (and pool indices) of a beat, read while it is in stage 1 and
        # registered into stage 3 with its activations: no memory read ends in the
        # engine's logic.
        s3_weights = Signal.like(weights_rd.data)
        s3_index = Signal.like(rd["indices"].data) if lookup else None
        entry = rd["taps"].data
        # The padding test uses the position of the beat in stage 1, not the issue
        # counters, which are already further on.
        ty = (s1.y + entry.dy).as_signed()
        tx = (s1.x + entry.dx).as_signed()
        inside = (ty >= 0) & (ty < d.height) & (tx >= 0) & (tx < d.width)
        for b in range(2):
            m.d.comb += [act_rp[b].addr.eq(s1.pos + entry.offset), act_rp[b].en.eq(advance)]
        with m.If(advance):
            m.d.sync += [s1.eq(issue), s1.valid.eq(issuing), s2.eq(s1),
                         s2_lanes.eq(Mux(inside, entry.mask, 0)), s3.eq(s2)]
            # Stage 3 registers the word's activations: the block RAM read, the buffer
            # select and the lane mask end here, not in the engine's adders.
            m.d.sync += [s3_acts[j].eq(Mux(s2_lanes[j], act_rdata[j], 0))
                         for j in range(cfg.taps)]
            m.d.sync += s3_weights.eq(weights_rd.data)
            if lookup:
                m.d.sync += s3_index.eq(rd["indices"].data)

        m.d.comb += [
            engine.i.valid.eq(s3.valid),
            engine.i.payload.first.eq(s3.first),
            engine.i.payload.last.eq(s3.last),
            engine.i.payload.acts.eq(s3_acts),
        ]
        if lookup:
            # A layer reads int8 weights or pool indices (the descriptor's `lookup`); both
            # memories are read at the beat's row and the engine takes the one it uses.
            m.d.comb += [
                engine.i.payload.weights.eq(s3_weights),
                engine.i.payload.index.eq(s3_index),
                engine.i.payload.lookup.eq(d.lookup),
                engine.i.payload.plane_lo.eq(d.plane_lo),
            ]
            if cfg.precompute:
                m.d.comb += [
                    engine.i.payload.fill.eq(s3.fill),
                    engine.i.payload.gather.eq((d.fill_groups != 0) & ~s3.fill),
                    engine.i.payload.step.eq(s3.step),
                    engine.i.payload.fill_row.eq(s3.fill_row),
                ]
        else:
            m.d.comb += engine.i.payload.codes.eq(s3_weights)
        if rbnn:
            m.d.comb += engine.i.payload.round.eq(s3.round)

        # The engine holds at most one result, so one register beside it holds the
        # group data of that result: loaded with the beat that ends the group, read
        # when the write-back unit takes the result (in the same cycle at the latest
        # as the next group end can be accepted).
        result_group = Signal(group_layout(cfg))
        # A pipelined engine's register stages (hw/program.engine_stages) move when it
        # takes a beat; beside each, whether it holds a group's last beat and the
        # group, so that the beat's group reaches `result_group` when the beat reaches
        # the accumulators.
        ends = engine.i.valid & s3.last
        end_group = s3.group
        in_stages = []
        for n in range(engine_stages(cfg)):
            end_n = Signal(name=f"engine_stage{n}_last")
            group_n = Signal(group_layout(cfg), name=f"engine_stage{n}_group")
            with m.If(engine.i.ready):
                m.d.sync += [end_n.eq(ends), group_n.eq(end_group)]
            ends, end_group = end_n, group_n
            in_stages.append(end_n)
        # A result is pending from the accumulation of its last beat until the write-back
        # unit takes it (the pool engine presents it a cycle later than the others).
        result_pending = Signal()
        with m.If(engine.o.valid & engine.o.ready):
            m.d.sync += result_pending.eq(0)
        with m.If(ends & engine.i.ready):
            m.d.sync += [result_group.eq(end_group), result_pending.eq(1)]

        # -- write-back unit -------------------------------------------------------------
        m.submodules.writeback = wb = WriteBack(cfg)
        wiring.connect(m, wb.bias, rd["bias"])
        m.d.comb += [
            wb.result.valid.eq(engine.o.valid),
            wb.result.payload.acc.eq(engine.o.payload),
            wb.result.payload.group.eq(result_group),
            engine.o.ready.eq(wb.result.ready),
            wb.layer.last.eq(d.last), wb.layer.shift.eq(d.shift), wb.layer.carry.eq(d.carry),
            wb.layer.lane_w.eq(d.lane_w), wb.layer.lane_l.eq(d.lane_l),
            wb.layer.n1.eq(d.n1), wb.layer.channels.eq(d.channels),
            out_wp.addr.eq(wb.write.payload.chan), out_wp.data.eq(wb.write.payload.value),
        ]

        # -- max-pool ------------------------------------------------------------------
        # The POOL state walks the windows of each channel group (one read beat per
        # cycle, pool_phases per window; flat_phases for a flat output, whose maxima
        # the unit writes lane by lane); the unit reads them through the source
        # buffer's read port. A window's outputs start at the group's first word
        # `pool_out` plus the position's (pos_w, pos_l), as in a MAC layer.
        m.submodules.maxpool = mp = MaxPool(cfg)
        in_base = Signal.like(mp.window.payload.base)
        pool_out = Signal(aw)
        pool_chan = Signal(count_width(channel_limit(cfg)))
        # The last channel group, registered at DECODE (like the MAC loops' ends): the
        # loop end is a plain compare.
        pool_chan_last = Signal(signed(len(pool_chan) + 1))
        pool_last_group = pool_chan == pool_chan_last
        phase = Signal.like(mp.window.payload.phase)
        phase_last = Mux(d.flat, flat_phases(cfg) - 1, pool_phases(cfg) - 1)
        m.d.comb += [
            mp.window.payload.base.eq(in_base), mp.window.payload.phase.eq(phase),
            mp.window.payload.addr.eq(pool_out + pos_w), mp.window.payload.lane.eq(pos_l),
            mp.window.payload.count.eq(Mux(pool_last_group, d.n1, cfg.taps)),
            mp.in_width.eq(d.in_width), mp.flat.eq(d.flat), mp.word.eq(act_rdata),
            mp.step.carry.eq(d.carry), mp.step.lane_w.eq(d.lane_w),
            mp.step.lane_l.eq(d.lane_l),
        ]
        with m.If(d.kind == KIND_POOL):
            for b in range(2):
                m.d.comb += act_rp[b].addr.eq(mp.read_addr)

        # -- MLG generate phase -------------------------------------------------------------
        if insitu:
            m.submodules.generate = gp = GeneratePhase(
                cfg, len(rows_mem.addr), len(d.steps), len(d.groups1), len(d.channels))
            stores = {f"{name}_rd": rd[f"mlg_{name}"] for name in STORES}
            for port_name, port in stores.items():
                m.d.comb += getattr(gp, port_name).data.eq(port.data)

            def gen_layer(desc):
                """The generate phase's layer fields from descriptor ``desc``."""
                return [getattr(gp.layer, name).eq(getattr(desc, name))
                        for name in gp.layer.shape().members if name != "groups"
                        ] + [gp.layer.groups.eq(desc.groups1)]

            m.d.comb += gen_layer(d)
            m.d.comb += [
                rows_mem.addr.eq(Mux(gp.write.valid, gp.write.addr, weights_rd.addr)),
                rows_mem.wr_en.eq(gp.write.valid), rows_mem.wr_data.eq(gp.write.data),
            ]

        # -- controller --------------------------------------------------------------------
        layer = Signal(range(cfg.program_depth))
        in_addr = Signal(aw)
        in_lane = Signal(lw)
        cycles = Signal(cfg.cycle_bits)
        out_idx = Signal(range(cfg.out_depth + 1))
        counting = Signal()
        with m.If(counting):
            m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += [self.cycles.eq(cycles), out_rp.addr.eq(out_idx)]

        # Writes of the write-back unit and of the max-pool's stage 1 (never both busy).
        with m.If(d.kind == KIND_POOL):
            m.d.comb += [wr_en.eq(mp.write.valid), wr_addr.eq(mp.write.payload.addr),
                         wr_data.eq(mp.write.payload.data), wr_lanes.eq(mp.write.payload.en)]
        with m.Elif(d.last):
            m.d.comb += out_wp.en.eq(wb.write.valid)
        with m.Else():
            m.d.comb += [wr_en.eq(wb.write.valid), wr_addr.eq(wb.write.payload.addr),
                         wr_data.eq(wb.write.payload.data), wr_lanes.eq(wb.write.payload.en)]

        # Everything the layer started is done after this cycle: no beat in flight, no
        # result in (or on its way out of) the engine, the write-back unit idle and its
        # first register stage empty (the last write, or a max-pool write in stage 1,
        # happens in this cycle).
        drained = (~s1.valid & ~s2.valid & ~s3.valid & ~Cat(*in_stages).any()
                   & ~result_pending & wb.idle & mp.idle)

        # -- readback ----------------------------------------------------------------------
        # While idle the read ports are free: a request is taken into a register (so the
        # link's request logic does not reach the memories' addresses in the same
        # cycle), the next cycle it addresses all ports, the cycle after the addressed
        # region's row is offered, and the ports are held (en low) until the row is
        # taken. An input word has priority over a request, and waits while one is
        # latched or its response pending, and after one until the program port shows
        # row 0 again (the loader counts layer 0's `in_lanes`, and DECODE reads row 0
        # when the last input word arrives); loads wait in the addressing cycle, when a
        # single-port memory could not also be written.
        m.submodules.readback = rb = Readback(cfg)
        wiring.connect(m, wiring.flipped(self.readback), rb.readback)
        m.d.comb += [rb.rows[name].eq(Value.cast(rd[name].data)) for name in rd]

        if lookup:
            # Writing pool row p builds the lookup table's column p (while idle).
            m.submodules.table_build = table = TableBuild(cfg)
            m.d.comb += table.row.payload.eq(self.load.payload)
            wiring.connect(m, table.build, engine.build)

        # The program port shows row 0 in this cycle: it read row 0 in the last one (an
        # idle cycle with no readback on the ports). Input words wait for it, since
        # the loader counts lanes by layer 0's `in_lanes` and DECODE reads layer 0.
        row0 = Signal()
        m.d.sync += row0.eq(0)
        first = rd["program"].data
        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += row0.eq(~rb.read & ~rb.hold)
                m.d.comb += [self.load.ready.eq(~rb.latched),
                             self.inp.ready.eq(~rb.busy & row0), rd["program"].addr.eq(0)]
                if lookup:
                    # Nothing else is taken while a pool row builds its table column.
                    m.d.comb += [
                        table.row.valid.eq(self.load.valid),
                        self.load.ready.eq(~rb.latched & table.row.ready),
                        self.inp.ready.eq(~rb.busy & row0 & table.row.ready),
                    ]
                m.d.comb += rb.enable.eq(~self.inp.valid)
                with m.If(rb.hold):
                    m.d.comb += [rd[name].en.eq(0) for name in rd]
                with m.Elif(rb.read):
                    m.d.comb += [rd[name].addr.eq(rb.addr) for name in rd]
                    m.d.comb += [rd[name].en.eq(1) for name in rd]
                # Input values fill the words of buffer 0 lane by lane, `in_lanes` lanes
                # a word.
                take_input = self.inp.valid & self.inp.ready
                m.d.comb += [wr_buf.eq(0), wr_en.eq(take_input), wr_addr.eq(in_addr),
                             *one_lane(self.inp.payload.data, in_lane)]
                with m.If(take_input):
                    m.d.sync += in_lane.eq(in_lane + 1)
                    with m.If(in_lane + 1 == first.in_lanes):
                        m.d.sync += [in_lane.eq(0), in_addr.eq(in_addr + 1)]
                    with m.If(self.inp.payload.last):
                        m.d.sync += [in_addr.eq(0), in_lane.eq(0), layer.eq(0), cycles.eq(0)]
                        m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                desc = rd["program"].data
                m.d.sync += [d.eq(desc), y.eq(0), x.eq(0), pos.eq(0), group.eq(0), step.eq(0),
                             second.eq(0), chan.eq(0), pos_w.eq(0), pos_l.eq(0), grp_w.eq(0),
                             grp_l.eq(0), wrow.eq(desc.weight_base), brow.eq(desc.bias_base),
                             in_base.eq(0), pool_out.eq(0), pool_chan.eq(0), phase.eq(0)]
                m.d.sync += [steps_last.eq(desc.steps - 1),
                             groups_last.eq(desc.groups1 + desc.groups2 - 1),
                             groups1_last.eq(desc.groups1 - 1), is_two.eq(desc.groups1 == 0),
                             width_last.eq(desc.width - 1), height_last.eq(desc.height - 1),
                             pool_chan_last.eq(desc.channels - 1)]
                if cfg.precompute:
                    m.d.sync += [filling.eq(desc.fill_groups != 0), fill_row.eq(0)]
                if rbnn:
                    m.d.sync += [rnd.eq(desc.round), rstep.eq(0), pos_w.eq(desc.out_base),
                                 round_last.eq(desc.round_steps - 1)]
                with m.If(desc.kind == KIND_POOL):
                    m.next = "POOL"
                with m.Else():
                    m.next = "ISSUE"
                    if insitu:
                        # The layer's weight rows are generated first (from the fields
                        # being read now).
                        m.d.comb += [*gen_layer(desc), gp.start.eq(1)]
                        m.next = "GENERATE"
            if insitu:
                with m.State("GENERATE"):
                    m.d.comb += [counting.eq(1), self.busy.eq(1)]
                    for port_name, port in stores.items():
                        m.d.comb += [port.addr.eq(getattr(gp, port_name).addr),
                                     port.en.eq(getattr(gp, port_name).en)]
                    with m.If(gp.done):
                        m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += [counting.eq(1), self.busy.eq(1), issuing.eq(1)]
                with m.If(advance):
                    m.d.sync += step.eq(step + 1)
                    with m.If(~filling):
                        m.d.sync += wrow.eq(wrow + 1)
                    with m.If(pass_end):
                        m.d.sync += step.eq(0)
                        with m.If(~filling):
                            m.d.sync += second.eq(is_two & ~second)
                    if rbnn:
                        # One pass per group (every binary filter is one term).
                        m.d.sync += rstep.eq(rstep + 1)
                        with m.If(pass_end):
                            m.d.sync += [rstep.eq(0), rnd.eq(d.round)]
                        with m.Elif(round_end):
                            m.d.sync += [rstep.eq(0), rnd.eq(rnd + 1),
                                         wrow.eq(wrow - round_last)]
                    if cfg.precompute:
                        with m.If(filling & pass_end):
                            m.d.sync += fill_row.eq(fill_row + 1)
                            with m.If(fill_row + 1 == d.fill_groups):
                                m.d.sync += filling.eq(0)
                    with m.If(group_end):
                        next_w, next_l = word_add(cfg, grp_w, grp_l, d.group_w, d.group_l,
                                                  d.carry)
                        m.d.sync += [group.eq(group + 1), brow.eq(brow + 1),
                                     chan.eq(chan + cfg.lanes), grp_w.eq(next_w),
                                     grp_l.eq(next_l)]
                        with m.If(group == groups1_last):
                            m.d.sync += [chan.eq(d.n1), grp_w.eq(d.n1_w), grp_l.eq(d.n1_l),
                                         is_two.eq(1)]
                    with m.If(pos_end):
                        # The same weight and bias rows serve every position. The next
                        # position's outputs are a word further (grouped) or a lane
                        # further (flat, whose carry is 1).
                        next_w, next_l = word_add(cfg, pos_w, pos_l, ~d.flat, d.flat, d.carry)
                        m.d.sync += [group.eq(0), chan.eq(0), grp_w.eq(0), grp_l.eq(0),
                                     is_two.eq(groups1_last < 0),
                                     pos.eq(pos + 1), pos_w.eq(next_w), pos_l.eq(next_l),
                                     wrow.eq(d.weight_base), brow.eq(d.bias_base),
                                     x.eq(x + 1)]
                        if cfg.precompute:
                            m.d.sync += [filling.eq(d.fill_groups != 0), fill_row.eq(0)]
                        with m.If(x == width_last):
                            m.d.sync += [x.eq(0), y.eq(y + 1)]
                    with m.If(layer_end):
                        m.next = "DRAIN"
            with m.State("POOL"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                m.d.comb += mp.window.valid.eq(1)
                with m.If(phase == phase_last):
                    # The next window's outputs: a word further (grouped) or a lane
                    # further (flat, whose carry is 1).
                    next_w, next_l = word_add(cfg, pos_w, pos_l, ~d.flat, d.flat, d.carry)
                    m.d.sync += [phase.eq(0), pos_w.eq(next_w), pos_l.eq(next_l),
                                 in_base.eq(in_base + 2), x.eq(x + 1)]
                    with m.If(x == width_last):
                        m.d.sync += [x.eq(0), y.eq(y + 1),
                                     in_base.eq(in_base + 2 + d.row_skip)]
                        with m.If(y == height_last):
                            # The next channel group: its outputs start `area` words on
                            # (grouped: area positions; flat: taps * area activations).
                            m.d.sync += [y.eq(0), pool_chan.eq(pool_chan + 1),
                                         in_base.eq(in_base + 2 + d.row_skip + d.chan_skip),
                                         pool_out.eq(pool_out + d.area), pos_w.eq(0),
                                         pos_l.eq(0)]
                            with m.If(pool_last_group):
                                m.next = "DRAIN"
                with m.Else():
                    m.d.sync += phase.eq(phase + 1)
            with m.State("DRAIN"):
                m.d.comb += [counting.eq(1), self.busy.eq(1)]
                # The next descriptor is read while the layer drains.
                m.d.comb += rd["program"].addr.eq(layer + 1)
                with m.If(drained):
                    with m.If(d.last):
                        m.d.sync += out_idx.eq(0)
                        m.next = "OUT_READ"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
                        m.next = "DECODE"
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
        return m
