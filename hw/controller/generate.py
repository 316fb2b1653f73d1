"""The MLG generate phase: one layer's weight rows made by the weight generator.

Before an MLG layer's beats are issued, the controller runs its GENERATE phase: this
unit asks the :class:`~shiftpool.hw.engines.generator.WeightGenerator` for the
layer's weight rows in the order the issue stage reads them (lane group ``g`` by lane
group, step ``s`` by step) and writes row ``g*steps + s`` of the accelerator's row
buffer with each. Only the bases live in the accelerator's memories; the buffer holds
one layer's generated rows at a time.

The requests are the compiler's (``sw/compile/mlg_layout.layer_requests``), made
from the layer's descriptor fields by counters::

    count  = Bc (level 2) or min(lanes, channels - g*lanes)
    v_addr = v_base + g*Bc
    a_addr = a_base + g*a_group + (G if level 1 and grouped else s)
    b_addr = b_base + g*lanes (level 2 off; b_base with level 2)
    k0     = s mod 9 (grouped) or s*taps mod 9 (flat)

with ``G = s // 9`` a grouped step's channel group. Timing: ``start`` (one cycle, the
layer's DECODE) puts the first request on the generator's input in the next cycle;
the generator takes one request every ``count + GEN_LATENCY`` cycles
(``hw/generator_layout.row_cycles``), its rows are written as they appear, and
``done`` is high in the cycle the layer's last row is written.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..config import KERNEL_TAPS, AcceleratorConfig
from ..engines.generator import WeightGenerator, generator_row_layout
from ..program import generate_fields

__all__ = ["GeneratePhase"]


class GeneratePhase(wiring.Component):
    """Generates one MLG layer's weight rows into the row buffer (module docstring).

    Members
    -------
    start : In(1)
        Begin the layer whose fields are on ``layer`` (held until ``done``).
    layer : In(StructLayout)
        The descriptor's generate fields (``hw/program.generate_fields``) and ``steps``,
        ``groups`` (lane groups) and ``channels``.
    done : Out(1)
        The layer's last row is written in this cycle.
    write : Out(StructLayout)
        ``valid``, ``addr`` (buffer row) and ``data`` (the generated row) of a write.
    v_rd, u_rd, b_rd, w1_rd :
        The generator's store read ports, for the accelerator to connect.
    """

    def __init__(self, config: AcceleratorConfig, row_addr_width: int, steps_width: int,
                 groups_width: int, channels_width: int):
        self._config = config
        self.generator = WeightGenerator(config)
        fields = {name: width for name, width in generate_fields(config)}
        fields.update(steps=steps_width, groups=groups_width, channels=channels_width)
        gen = self.generator.signature.members
        super().__init__({
            "start": In(1),
            "layer": In(data.StructLayout(fields)),
            "done": Out(1),
            "write": Out(data.StructLayout({"valid": 1, "addr": row_addr_width,
                                            "data": generator_row_layout(config)})),
            **{name: gen[name] for name in ("v_rd", "u_rd", "b_rd", "w1_rd")},
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.submodules.generator = gen = self.generator
        for name in ("v_rd", "u_rd", "b_rd", "w1_rd"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(gen, name))
        f = self.layer
        req = gen.i.payload

        active = Signal()               # requests left to offer
        last_taken = Signal()           # the layer's last request was taken
        group = Signal.like(f.groups)
        step = Signal.like(f.steps)
        chan_group = Signal.like(f.steps)       # G = step // 9 (grouped)
        kpos = Signal(range(KERNEL_TAPS))       # k0 of the step
        left = Signal.like(f.channels)          # channels - group*lanes
        v_row = Signal.like(req.v_addr)
        a_group = Signal.like(req.a_addr)       # a_base + group*a_group
        b_row = Signal.like(req.b_addr)

        m.d.comb += [
            gen.i.valid.eq(active),
            req.level1.eq(f.gen_level1), req.level2.eq(f.gen_level2),
            req.grouped.eq(f.gen_grouped),
            req.count.eq(Mux(f.gen_level2, f.gen_bc, Mux(left < cfg.lanes, left, cfg.lanes))),
            req.v_addr.eq(v_row),
            req.a_addr.eq(a_group + Mux(f.gen_level1 & f.gen_grouped, chan_group, step)),
            req.a_stride.eq(f.gen_a_stride),
            req.b_addr.eq(b_row),
            req.k0.eq(kpos),
        ]
        step_k = cfg.taps % KERNEL_TAPS         # a flat step moves k0 by taps mod 9
        with m.If(self.start):
            m.d.sync += [active.eq(1), last_taken.eq(0), group.eq(0), step.eq(0),
                         chan_group.eq(0), kpos.eq(0), left.eq(f.channels),
                         v_row.eq(f.gen_v_base), a_group.eq(f.gen_a_base),
                         b_row.eq(f.gen_b_base)]
        with m.Elif(gen.i.valid & gen.i.ready):
            m.d.sync += step.eq(step + 1)
            with m.If(f.gen_grouped):
                m.d.sync += kpos.eq(kpos + 1)
                with m.If(kpos == KERNEL_TAPS - 1):
                    m.d.sync += [kpos.eq(0), chan_group.eq(chan_group + 1)]
            with m.Elif(kpos + step_k >= KERNEL_TAPS):
                m.d.sync += kpos.eq(kpos + step_k - KERNEL_TAPS)
            with m.Else():
                m.d.sync += kpos.eq(kpos + step_k)
            with m.If(step + 1 == f.steps):
                m.d.sync += [step.eq(0), chan_group.eq(0), kpos.eq(0), group.eq(group + 1),
                             left.eq(left - cfg.lanes), v_row.eq(v_row + f.gen_bc),
                             a_group.eq(a_group + f.gen_a_group),
                             b_row.eq(b_row + Mux(f.gen_level2, 0, cfg.lanes))]
                with m.If(group + 1 == f.groups):
                    m.d.sync += [active.eq(0), last_taken.eq(1)]

        # Rows are taken as they appear; the one after the last request was taken is
        # the layer's last.
        row_n = Signal.like(self.write.addr)
        m.d.comb += [gen.o.ready.eq(1), self.write.valid.eq(gen.o.valid),
                     self.write.addr.eq(row_n), self.write.data.eq(gen.o.payload),
                     self.done.eq(gen.o.valid & last_taken)]
        with m.If(self.start):
            m.d.sync += row_n.eq(0)
        with m.Elif(gen.o.valid):
            m.d.sync += row_n.eq(row_n + 1)
        return m
