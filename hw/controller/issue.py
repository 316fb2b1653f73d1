"""The issue pipeline: a layer's positions walked, one beat per cycle to the engine (a
MAC layer) or one window read per cycle to the max-pool (a max-pool layer)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig
from ..engines.common import engine_input_layout, engine_output_layout
from ..program import (
    KIND_POOL,
    act_words,
    addr_width,
    channel_limit,
    count_width,
    engine_stages,
    flat_phases,
    lane_width,
    pool_phases,
    round_width,
)
from .layouts import beat_layout, descriptor_layout, group_layout, word_add
from .maxpool import window_layout
from .memory_bank import read_port_signature
from .writeback import result_layout

__all__ = ["Issue", "IssueControlSignature"]


class IssueControlSignature(wiring.Signature):
    """How the sequencer runs the issue pipeline, seen from the sequencer.

    Members
    -------
    start : Out(1)
        DECODE: the layer ``next`` begins; every counter restarts.
    next : Out(descriptor_layout(config))
        The descriptor being decoded (with ``start``).
    mac : Out(1)
        Issue the MAC layer's beats (the ISSUE state).
    pool : Out(1)
        Walk the max-pool layer's windows (the POOL state).
    end : In(1)
        The layer's last beat (taken by the pipeline) or window read is issued in
        this cycle.
    """

    def __init__(self, config: AcceleratorConfig):
        self._config = config
        super().__init__({"start": Out(1), "next": Out(descriptor_layout(config)),
                          "mac": Out(1), "pool": Out(1), "end": In(1)})

    def __eq__(self, other):
        return type(other) is type(self) and self._config == other._config

    def __hash__(self):
        return hash((type(self), self._config))

    def __repr__(self):
        return f"IssueControlSignature({self._config!r})"


class Issue(wiring.Component):
    """Walks a layer's output positions and issues its reads.

    *MAC layer* (``control.mac``). From the cycle after ``control.start`` the issue
    stage offers one beat (one weight row) per cycle, in the order position, lane
    group, pass, step: stage 1 reads its tap row and weight row (and the pool
    engine's index row), stage 2 its activation word, stage 3 registers the word's
    activations (with the tap row's lane mask and the padding test applied) and the
    weight row, and the beat is offered on ``beat`` three cycles after it was issued.
    Every register and read port moves only while the engine takes the beat in stage 3 or stage 3 is
    empty (``advance``), so a beat the engine refuses freezes the whole pipeline
    with its data intact. The group data of the beat with ``last`` (the group's
    channel, bias row and where its outputs go) waits beside the engine, which holds
    at most one result, and goes with the engine's sums (``sums``) to ``result``.

    *Max-pool layer* (``control.pool``). One read beat per cycle on ``window``:
    ``pool_phases`` per window (``flat_phases`` for a flat output, whose maxima the
    max-pool writes lane by lane), window by window along the rows, channel group by
    channel group. A window's outputs start at the group's first word plus the
    position's (word, lane), as in a MAC layer.

    The positions' output words and lanes step with mixed-radix adds
    (:func:`~.layouts.word_add`) by descriptor fields the compiler computes.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    control : In(IssueControlSignature(config))
        From the sequencer.
    layer : In(descriptor_layout(config))
        The running layer's descriptor (held from the cycle after ``control.start``).
    beat : Out(stream.Signature(engine_input_layout(config)))
        To the engine.
    sums : In(stream.Signature(engine_output_layout(config)))
        The engine's results.
    result : Out(stream.Signature(result_layout(config)))
        The engine's results with their groups' data, to the write-back unit.
    window : Out(stream.Signature(window_layout(config), always_ready=True))
        To the max-pool.
    taps_rd, weights_rd, act_rd, (pool engine) indices_rd :
        In(memory bank's read port signatures): the rows the beats read.
    idle : Out(1)
        No beat is in the pipeline and no result is in (or leaving) the engine.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        ports = {f"{name}_rd": In(read_port_signature(config, name))
                 for name in ("taps", "weights", "act")}
        if config.engine == "pool":
            ports["indices_rd"] = In(read_port_signature(config, "indices"))
        super().__init__({
            "control": In(IssueControlSignature(config)),
            "layer": In(descriptor_layout(config)),
            "beat": Out(stream.Signature(engine_input_layout(config))),
            "sums": In(stream.Signature(engine_output_layout(config))),
            "result": Out(stream.Signature(result_layout(config))),
            "window": Out(stream.Signature(window_layout(config), always_ready=True)),
            **ports,
            "idle": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        ctl, d, engine_i = self.control, self.layer, self.beat
        desc = ctl.next
        words = act_words(cfg)
        aw = addr_width(words)
        lw = lane_width(cfg)
        lookup = cfg.engine == "pool"
        rbnn = cfg.engine == "binary"

        # Issue stage (counters) -> stage 1 (tap and weight rows arrive) -> stage 2
        # (activations arrive) -> stage 3 (activations registered; the beat is offered
        # to the engine).
        blayout = beat_layout(cfg)
        # The issue stage's beat, built from the counters below. Its valid bit is the
        # separate `issuing`: a struct driven partly by plain assignments and partly
        # by the FSM becomes per-slice `always @*` blocks in Verilog that Icarus never
        # evaluates at time 0 (they would stay X until a counter changes).
        issue = Signal(blayout)
        issuing = ctl.mac
        s1 = Signal(blayout)
        s2 = Signal(blayout)
        s2_lanes = Signal(cfg.taps)
        s3 = Signal(blayout)
        s3_acts = Signal(data.ArrayLayout(unsigned(cfg.act_bits), cfg.taps))
        advance = Signal()
        m.d.comb += advance.eq(~s3.valid | engine_i.ready)

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
        # Whether each loop counter is at its last value: registers kept beside the
        # counters (each set from the value its counter takes), so the loop ends, which
        # chain from the step loop to the layer's end and on to the sequencer, are an
        # AND of flip-flops instead of a compare per loop.
        at_step_last = Signal()
        at_group_last = Signal()
        at_x_last = Signal()
        at_y_last = Signal()
        pass_end = at_step_last
        # RBNN rounds (binary engine): the round of the issued step, and the step within
        # it; every `round_steps` steps the weight rows restart with the next round.
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
        pos_end = group_end & at_group_last
        row_end = pos_end & at_x_last
        layer_end = row_end & at_y_last
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
            self.taps_rd.addr.eq(d.tap_base + step), self.taps_rd.en.eq(advance),
            self.weights_rd.addr.eq(s1.wrow), self.weights_rd.en.eq(advance),
        ]
        if lookup:
            m.d.comb += [self.indices_rd.addr.eq(s1.wrow), self.indices_rd.en.eq(advance)]
        # The weight row (and pool indices) of a beat, read while it is in stage 1 and
        # registered into stage 3 with its activations: no memory read ends in the
        # engine's logic.
        s3_weights = Signal.like(self.weights_rd.data)
        s3_index = Signal.like(self.indices_rd.data) if lookup else None
        entry = self.taps_rd.data
        # The padding test uses the position of the beat in stage 1, not the issue
        # counters, which are already further on.
        ty = (s1.y + entry.dy).as_signed()
        tx = (s1.x + entry.dx).as_signed()
        inside = (ty >= 0) & (ty < d.height) & (tx >= 0) & (tx < d.width)
        m.d.comb += [self.act_rd.addr.eq(s1.pos + entry.offset), self.act_rd.en.eq(advance)]
        with m.If(advance):
            m.d.sync += [s1.eq(issue), s1.valid.eq(issuing), s2.eq(s1),
                         s2_lanes.eq(Mux(inside, entry.mask, 0)), s3.eq(s2)]
            # Stage 3 registers the word's activations: the block RAM read, the buffer
            # select and the lane mask end here, not in the engine's adders.
            m.d.sync += [s3_acts[j].eq(Mux(s2_lanes[j], self.act_rd.data[j], 0))
                         for j in range(cfg.taps)]
            m.d.sync += s3_weights.eq(self.weights_rd.data)
            if lookup:
                m.d.sync += s3_index.eq(self.indices_rd.data)

        m.d.comb += [
            engine_i.valid.eq(s3.valid),
            engine_i.payload.first.eq(s3.first),
            engine_i.payload.last.eq(s3.last),
            engine_i.payload.acts.eq(s3_acts),
        ]
        if lookup:
            # A layer reads int8 weights or pool indices (the descriptor's `lookup`); both
            # memories are read at the beat's row and the engine takes the one it uses.
            m.d.comb += [
                engine_i.payload.weights.eq(s3_weights),
                engine_i.payload.index.eq(s3_index),
                engine_i.payload.lookup.eq(d.lookup),
                engine_i.payload.plane_lo.eq(d.plane_lo),
            ]
            if cfg.precompute:
                m.d.comb += [
                    engine_i.payload.fill.eq(s3.fill),
                    engine_i.payload.gather.eq((d.fill_groups != 0) & ~s3.fill),
                    engine_i.payload.step.eq(s3.step),
                    engine_i.payload.fill_row.eq(s3.fill_row),
                ]
        else:
            m.d.comb += engine_i.payload.codes.eq(s3_weights)
        if rbnn:
            m.d.comb += engine_i.payload.round.eq(s3.round)

        # The engine holds at most one result, so one register beside it holds the
        # group data of that result: loaded with the beat that ends the group, read
        # when the write-back unit takes the result (in the same cycle at the latest
        # as the next group end can be accepted).
        result_group = Signal(group_layout(cfg))
        # A pipelined engine's register stages (hw/program.engine_stages) move when it
        # takes a beat; beside each, whether it holds a group's last beat and the
        # group, so that the beat's group reaches `result_group` when the beat reaches
        # the accumulators.
        ends = engine_i.valid & s3.last
        end_group = s3.group
        in_stages = []
        for n in range(engine_stages(cfg)):
            end_n = Signal(name=f"engine_stage{n}_last")
            group_n = Signal(group_layout(cfg), name=f"engine_stage{n}_group")
            with m.If(engine_i.ready):
                m.d.sync += [end_n.eq(ends), group_n.eq(end_group)]
            ends, end_group = end_n, group_n
            in_stages.append(end_n)
        # A result is pending from the accumulation of its last beat until the write-back
        # unit takes it (the pool engine presents it a cycle later than the others).
        result_pending = Signal()
        sums, result = self.sums, self.result
        with m.If(sums.valid & sums.ready):
            m.d.sync += result_pending.eq(0)
        with m.If(ends & engine_i.ready):
            m.d.sync += [result_group.eq(end_group), result_pending.eq(1)]
        m.d.comb += [
            result.valid.eq(sums.valid),
            result.payload.acc.eq(sums.payload),
            result.payload.group.eq(result_group),
            sums.ready.eq(result.ready),
            self.idle.eq(~s1.valid & ~s2.valid & ~s3.valid & ~Cat(*in_stages).any()
                         & ~result_pending),
        ]

        # -- the max-pool layer's window walk (only with `maxpool`) --------------------------
        if cfg.maxpool:
            win = self.window.payload
            in_base = Signal.like(win.base)
            pool_out = Signal(aw)
            pool_chan = Signal(count_width(channel_limit(cfg)))
            # The last channel group, registered at DECODE (like the MAC loops' ends): the
            # loop end is a plain compare.
            pool_chan_last = Signal(signed(len(pool_chan) + 1))
            pool_last_group = pool_chan == pool_chan_last
            phase = Signal.like(win.phase)
            phase_last = Mux(d.flat, flat_phases(cfg) - 1, pool_phases(cfg) - 1)
            m.d.comb += [
                self.window.valid.eq(ctl.pool),
                win.base.eq(in_base), win.phase.eq(phase),
                win.addr.eq(pool_out + pos_w), win.lane.eq(pos_l),
                win.count.eq(Mux(pool_last_group, d.n1, cfg.taps)),
            ]
            pool_end = ((phase == phase_last) & at_x_last & at_y_last
                        & pool_last_group)
            m.d.comb += ctl.end.eq(Mux(d.kind == KIND_POOL, pool_end, advance & layer_end))
        else:
            m.d.comb += ctl.end.eq(advance & layer_end)

        # -- the counters ---------------------------------------------------------------------
        with m.If(ctl.start):
            m.d.sync += [y.eq(0), x.eq(0), pos.eq(0), group.eq(0), step.eq(0),
                         second.eq(0), chan.eq(0), pos_w.eq(0), pos_l.eq(0), grp_w.eq(0),
                         grp_l.eq(0), wrow.eq(desc.weight_base), brow.eq(desc.bias_base)]
            m.d.sync += [steps_last.eq(desc.steps - 1),
                         groups_last.eq(desc.groups1 + desc.groups2 - 1),
                         groups1_last.eq(desc.groups1 - 1), is_two.eq(desc.groups1 == 0),
                         width_last.eq(desc.width - 1), height_last.eq(desc.height - 1),
                         at_step_last.eq(desc.steps == 1),
                         at_group_last.eq(desc.groups1 + desc.groups2 == 1),
                         at_x_last.eq(desc.width == 1), at_y_last.eq(desc.height == 1)]
            if cfg.maxpool:
                m.d.sync += [in_base.eq(0), pool_out.eq(0), pool_chan.eq(0), phase.eq(0),
                             pool_chan_last.eq(desc.channels - 1)]
            if cfg.precompute:
                m.d.sync += [filling.eq(desc.fill_groups != 0), fill_row.eq(0)]
            if rbnn:
                m.d.sync += [rnd.eq(desc.round), rstep.eq(0), pos_w.eq(desc.out_base),
                             round_last.eq(desc.round_steps - 1)]
        with m.Elif(ctl.mac & advance):
            m.d.sync += [step.eq(step + 1), at_step_last.eq(step + 1 == steps_last)]
            with m.If(~filling):
                m.d.sync += wrow.eq(wrow + 1)
            with m.If(pass_end):
                m.d.sync += [step.eq(0), at_step_last.eq(steps_last == 0)]
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
                next_w, next_l = word_add(cfg, grp_w, grp_l, d.group_w, d.group_l, d.carry)
                m.d.sync += [group.eq(group + 1), at_group_last.eq(group + 1 == groups_last),
                             brow.eq(brow + 1),
                             chan.eq(chan + cfg.lanes), grp_w.eq(next_w), grp_l.eq(next_l)]
                with m.If(group == groups1_last):
                    m.d.sync += [chan.eq(d.n1), grp_w.eq(d.n1_w), grp_l.eq(d.n1_l),
                                 is_two.eq(1)]
            with m.If(pos_end):
                # The same weight and bias rows serve every position. The next
                # position's outputs are a word further (grouped) or a lane further
                # (flat, whose carry is 1).
                next_w, next_l = word_add(cfg, pos_w, pos_l, ~d.flat, d.flat, d.carry)
                m.d.sync += [group.eq(0), at_group_last.eq(groups_last == 0),
                             chan.eq(0), grp_w.eq(0), grp_l.eq(0),
                             is_two.eq(groups1_last < 0),
                             pos.eq(pos + 1), pos_w.eq(next_w), pos_l.eq(next_l),
                             wrow.eq(d.weight_base), brow.eq(d.bias_base), x.eq(x + 1),
                             at_x_last.eq(x + 1 == width_last)]
                if cfg.precompute:
                    m.d.sync += [filling.eq(d.fill_groups != 0), fill_row.eq(0)]
                with m.If(at_x_last):
                    m.d.sync += [x.eq(0), at_x_last.eq(width_last == 0), y.eq(y + 1),
                                 at_y_last.eq(y + 1 == height_last)]
        if cfg.maxpool:
            with m.Elif(ctl.pool):
                with m.If(phase == phase_last):
                    # The next window's outputs: a word further (grouped) or a lane further
                    # (flat, whose carry is 1).
                    next_w, next_l = word_add(cfg, pos_w, pos_l, ~d.flat, d.flat, d.carry)
                    m.d.sync += [phase.eq(0), pos_w.eq(next_w), pos_l.eq(next_l),
                                 in_base.eq(in_base + 2), x.eq(x + 1),
                                 at_x_last.eq(x + 1 == width_last)]
                    with m.If(at_x_last):
                        m.d.sync += [x.eq(0), at_x_last.eq(width_last == 0), y.eq(y + 1),
                                     at_y_last.eq(y + 1 == height_last),
                                     in_base.eq(in_base + 2 + d.row_skip)]
                        with m.If(at_y_last):
                            # The next channel group: its outputs start `area` words on
                            # (grouped: area positions; flat: taps * area activations).
                            m.d.sync += [y.eq(0), at_y_last.eq(height_last == 0),
                                         pool_chan.eq(pool_chan + 1),
                                         in_base.eq(in_base + 2 + d.row_skip + d.chan_skip),
                                         pool_out.eq(pool_out + d.area), pos_w.eq(0), pos_l.eq(0)]
                with m.Else():
                    m.d.sync += phase.eq(phase + 1)
        return m
