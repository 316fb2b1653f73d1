"""The accelerator: memories, the layer-program controller and one engine.

The controller's units are components of :mod:`shiftpool.hw.controller`; this module
only connects them (``docs/architecture.md`` §2 has the picture)::

    load, inp --> sequencer --rows, fill--> memory bank <--readback--> (link)
                  |  layer, control            |  read ports: program, taps, weights,
                  v                            |  bias, indices, MLG stores, act, out
                issue --beat--> engine --sums--> issue --result--> write-back --+
                  |                                                              |
                  +--window--> max-pool --pooled--> memory bank <--results-------+
                  (pool engine) sequencer --table--> table build --build--> engine
                  (in-situ) sequencer --start--> generate phase --rows--> bank

The memory bank (memories, their ports, readback), the issue pipeline (the position
walk of MAC and max-pool layers, result tracking) and the sequencer (the state
machine, the input loader, the cycle counter) each have a unit test of their own.

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

from amaranth.hdl import Module
from amaranth.lib import wiring

from .config import AcceleratorConfig
from .controller.generate import GeneratePhase
from .controller.issue import Issue
from .controller.layouts import beat_layout, group_layout
from .controller.maxpool import MaxPool
from .controller.memory_bank import MemoryBank
from .controller.sequencer import Sequencer
from .controller.table_build import TableBuild
from .controller.writeback import WriteBack
from .engines.common import make_engine
from .generator_layout import STORES
from .memory_map import region_width
from .program import pool_phases
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
        (``region``, ``addr``, ``byte``) is taken while idle and no input word is
        offered; that byte of the row (zero above the region's width) is offered on
        ``resp`` from the third cycle after and held until taken. One request is
        answered at a time; input words wait while one is in progress.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__(AcceleratorSignature(config))

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.engine = engine = make_engine(cfg)
        m.submodules.bank = bank = MemoryBank(cfg)
        m.submodules.sequencer = seq = Sequencer(cfg)
        m.submodules.issue = issue = Issue(cfg)
        m.submodules.writeback = wb = WriteBack(cfg)
        if cfg.maxpool:
            m.submodules.maxpool = mp = MaxPool(cfg)

        # The accelerator's ports.
        wiring.connect(m, wiring.flipped(self.load), seq.load)
        wiring.connect(m, wiring.flipped(self.inp), seq.inp)
        wiring.connect(m, seq.out, wiring.flipped(self.out))
        wiring.connect(m, wiring.flipped(self.readback), bank.readback)
        m.d.comb += [self.cycles.eq(seq.cycles), self.busy.eq(seq.busy)]

        # The sequencer's side of the memory bank and the issue pipeline.
        wiring.connect(m, seq.rows, bank.load)
        wiring.connect(m, seq.fill, bank.fill)
        wiring.connect(m, seq.program_rd, bank.program_rd)
        wiring.connect(m, seq.out_rd, bank.out_rd)
        wiring.connect(m, seq.issue, issue.control)
        d = seq.layer
        m.d.comb += [
            bank.readback_enable.eq(seq.readback_enable),
            seq.readback_status.eq(bank.readback_status),
            bank.mode.eq(seq.mode),
            issue.layer.eq(d),
            seq.drained.eq(issue.idle & wb.idle & (mp.idle if cfg.maxpool else 1)),
        ]

        # MAC layers: issue -> engine -> issue (the group's data) -> write-back.
        for name in ("taps", "weights", "act") + (("indices",) if cfg.engine == "pool" else ()):
            wiring.connect(m, getattr(issue, f"{name}_rd"), getattr(bank, f"{name}_rd"))
        wiring.connect(m, issue.beat, engine.i)
        wiring.connect(m, engine.o, issue.sums)
        wiring.connect(m, issue.result, wb.result)
        wiring.connect(m, wb.bias, bank.bias_rd)
        wiring.connect(m, wb.write, bank.results)
        m.d.comb += [getattr(wb.layer, name).eq(getattr(d, name))
                     for name in wb.layer.shape().members]

        # Max-pool layers: issue (window walk) -> max-pool, reading the activation port
        # (without `maxpool` no such layer runs, and neither unit is built).
        if cfg.maxpool:
            wiring.connect(m, issue.window, mp.window)
            wiring.connect(m, mp.write, bank.pooled)
            m.d.comb += [
                bank.window_addr.eq(mp.read_addr), mp.word.eq(bank.act_rd.data),
                mp.in_width.eq(d.in_width), mp.flat.eq(d.flat),
                *[getattr(mp.step, name).eq(getattr(d, name))
                  for name in mp.step.shape().members],
            ]

        if cfg.engine == "pool":
            # Writing pool row p builds the lookup table's column p (while idle).
            m.submodules.table_build = table = TableBuild(cfg)
            wiring.connect(m, seq.table, table.row)
            wiring.connect(m, table.build, engine.build)
        if cfg.engine == "insitu":
            # MLG: each layer's weight rows are generated into the bank's row buffer.
            m.submodules.generate = gp = GeneratePhase(
                cfg, len(bank.rows_write.addr), len(d.steps), len(d.groups1), len(d.channels))
            for name in STORES:
                user, port = getattr(gp, f"{name}_rd"), getattr(bank, f"mlg_{name}_rd")
                m.d.comb += [port.addr.eq(user.addr), port.en.eq(user.en),
                             user.data.eq(port.data)]
            m.d.comb += [gp.start.eq(seq.generate.start), gp.layer.eq(seq.generate.layer),
                         seq.generate.done.eq(gp.done), bank.rows_write.eq(gp.write)]
        return m
