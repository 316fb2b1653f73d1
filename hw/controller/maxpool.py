"""The max-pool unit: 2x2 windows of activation words read through the activation
buffer's one read port, their lane-wise maxima written back."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig
from ..program import POOL_WINDOW, act_words, addr_width, count_width, flat_phases, lane_width
from .layouts import act_word_layout, descriptor_layout, word_add

__all__ = ["MaxPool", "act_word_layout", "pool_write_layout", "window_layout"]


def window_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One read beat of a window: the address of its top-left word, the phase (0..3:
    which of the window's four words the port reads: top-left, top-right,
    bottom-left, bottom-right; a flat output's later phases read nothing), the output
    word and lane of its first channel, and (flat output) how many of its lanes are
    channels."""
    return data.StructLayout({
        "base": unsigned(count_width(act_words(cfg) + 2 * cfg.max_dim + 2)),
        "phase": range(flat_phases(cfg)),
        "addr": unsigned(addr_width(act_words(cfg))),
        "lane": unsigned(lane_width(cfg)),
        "count": range(1, cfg.taps + 1),
    })


def pool_write_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One write of the max-pool: word address, word and lane enables."""
    return data.StructLayout({"addr": unsigned(addr_width(act_words(cfg))),
                              "data": act_word_layout(cfg), "en": unsigned(cfg.taps)})


def _max(a, b):
    return Mux(a > b, a, b)


class MaxPool(wiring.Component):
    """Reads each 2x2 window of words in beats of phases 0..3 (one word each) and
    writes its lane-wise maxima.

    A beat on ``window`` (taken every cycle) addresses word ``base + (phase & 1) +
    (in_width if phase >= 2 else 0)`` through ``read_addr`` in the same cycle; the
    port answers the next cycle on ``word``. A window's beats come in phase order
    (idle cycles may sit between them); ``in_width``, ``flat`` and ``step`` hold still
    during a layer. With ``flat`` low the whole word of maxima is written (all lanes)
    one cycle after the window's phase-3 beat. With ``flat`` high its lanes ``0 ..
    count - 1`` are written one per cycle from the second cycle after it, lane ``k``
    into word and lane ``(addr, lane) + k * (step.lane_w, step.lane_l)`` (a lane
    carry adding ``step.carry`` words); the next window's phase-3 beat may come
    ``count`` cycles after this one's at the earliest.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    window : In(stream.Signature(window_layout(config), always_ready=True))
        The read beats.
    in_width : In(the descriptor's in_width)
        Words in one input row.
    flat : In(1)
        The output map is stored flat (one activation per write).
    step : In(the descriptor's carry, lane_w, lane_l)
        A flat output: where the next channel of a window goes.
    idle : Out(1)
        No write is due after this cycle's.
    read_addr : Out(window_layout(config)["base"])
        The read port's address for the beat on ``window``.
    word : In(act_word_layout(config))
        The read port's data, a cycle after ``read_addr``.
    write : Out(stream.Signature(pool_write_layout(config), always_ready=True))
        A window's maxima at its ``addr``.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        base = window_layout(config)["base"].shape
        desc = descriptor_layout(config)
        super().__init__({
            "window": In(stream.Signature(window_layout(config), always_ready=True)),
            "in_width": In(descriptor_layout(config)["in_width"].shape),
            "flat": In(1),
            "step": In(data.StructLayout({name: desc[name].shape
                                          for name in ("carry", "lane_w", "lane_l")})),
            "idle": Out(1),
            "read_addr": Out(base),
            "word": In(act_word_layout(config)),
            "write": Out(stream.Signature(pool_write_layout(config), always_ready=True)),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        beat = self.window.payload
        m.d.comb += self.read_addr.eq(beat.base + beat.phase[0]
                                      + Mux(beat.phase[1], self.in_width, 0))

        # Stage 1: the beat whose word the port shows now.
        p1 = Signal(window_layout(cfg))
        p1_valid = Signal()
        m.d.sync += [p1_valid.eq(self.window.valid), p1.eq(beat)]
        running = Signal(act_word_layout(cfg))     # maxima over the window's earlier words
        value = Signal(act_word_layout(cfg))
        for j in range(cfg.taps):
            m.d.comb += value[j].eq(Mux(p1.phase == 0, self.word[j],
                                        _max(self.word[j], running[j])))
        with m.If(p1_valid & (p1.phase < POOL_WINDOW)):
            m.d.sync += running.eq(value)
        done = p1_valid & (p1.phase == POOL_WINDOW - 1)      # the window's maxima: value

        # A flat output's lane writer: the held maxima, lane k of count, at (w, l).
        held = Signal(act_word_layout(cfg))
        busy = Signal()
        k = Signal(range(cfg.taps))
        last_k = Signal(range(cfg.taps))
        w = Signal.like(p1.addr)
        lane = Signal.like(p1.lane)
        writing_last = busy & (k == last_k)
        with m.If(busy):
            next_w, next_l = word_add(cfg, w, lane, self.step.lane_w, self.step.lane_l,
                                      self.step.carry)
            m.d.sync += [k.eq(k + 1), w.eq(next_w), lane.eq(next_l)]
            with m.If(writing_last):
                m.d.sync += busy.eq(0)
        with m.If(done & self.flat):
            m.d.sync += [held.eq(value), busy.eq(1), k.eq(0), last_k.eq(p1.count - 1),
                         w.eq(p1.addr), lane.eq(p1.lane)]
        m.d.comb += self.idle.eq(~(done & self.flat) & ~(busy & ~writing_last))

        with m.If(self.flat):
            m.d.comb += [self.write.valid.eq(busy), self.write.payload.addr.eq(w),
                         self.write.payload.data.eq(Cat(*([held[k]] * cfg.taps))),
                         self.write.payload.en.eq(Const(1, cfg.taps) << lane)]
        with m.Else():
            m.d.comb += [self.write.valid.eq(done), self.write.payload.addr.eq(p1.addr),
                         self.write.payload.data.eq(value),
                         self.write.payload.en.eq((1 << cfg.taps) - 1)]
        return m
